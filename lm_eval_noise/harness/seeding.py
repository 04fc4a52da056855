"""The seeding rule for lm-eval requests: which content each request type's sample
seed hashes (noise.rng.sample_seed does the hashing).

- generate_until: the context string (`generation_seed`; `lm-eval-noise vectors`
  rebuilds a logged sample's seed with it);
- loglikelihood: the context's tokens alone, so the choices of a question share noise;
- loglikelihood_rolling: the window's tokens.
lm-eval hands a task's `repeats: n` to the model as the same Instance object n times,
so the repeat index is the occurrence count of that object in the request list. Two
different requests with equal content get the same noise, as the contract says.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence

from ..noise.rng import derive_seed, sample_seed

_PREFIX_ALPHABET = string.ascii_letters + string.digits
_PREFIX_STREAM = 1  # derive_seed stream of the prefix: apart from the noise's own draws


def repeat_indices(requests: Sequence) -> list[int]:
    seen: dict[int, int] = {}
    indices = []
    for request in requests:
        index = seen.get(id(request), 0)
        seen[id(request)] = index + 1
        indices.append(index)
    return indices


def generation_seed(noise_seed: int, context: str, repeat: int) -> int:
    return sample_seed(noise_seed, ("generate_until", context), repeat)


def scoring_seed(noise_seed: int, key, context: Sequence[int], continuation: Sequence[int], repeat: int) -> int:
    """A scoring row's seed. lm-eval passes a rolling window without a key: its tokens
    are its content; a loglikelihood pair's seed comes from the context's tokens alone,
    as the engine split the pair, so the choices of a question share one draw."""
    if key is None:
        return sample_seed(noise_seed, ("loglikelihood_rolling", [*context, *continuation]), repeat)
    return sample_seed(noise_seed, ("loglikelihood", list(context)), repeat)


def random_prefix(seed: int, length: int) -> str:
    """The random string a sample's context starts with under `random_prefix=length`
    (training-free seed conditioning): `length` letters and digits and a newline, a
    function of the sample seed alone, so it can be rebuilt from the log."""
    rng = random.Random(derive_seed(seed, _PREFIX_STREAM))
    return "".join(rng.choice(_PREFIX_ALPHABET) for _ in range(length)) + "\n"
