"""Generation throughput of hf-noise against plain hf, same run.

Both wrap the same randomly initialised model object and generate the same greedy
requests (a fixed number of new tokens each). Runs alternate in order round by round
and the table reports medians and the ratio noise / hf. On CPU it also reports the
share of each noisy run spent inside the noise hook, a direct and far less noisy
measure of the cost than a throughput ratio on a shared machine.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager, nullcontext

import torch
from tqdm import tqdm

from .common import build_bench_model

DEFAULT_VARIANTS = "embed:per_token,embed:per_sequence,layer:-2:per_token"
_PROMPT_WORDS = (
    "Write a function that returns the sum of the squares of a list of numbers and "
    "explain how it handles empty input before you give an example of its use"
).split()


def _requests(count: int, new_tokens: int):
    from lm_eval.api.instance import Instance

    gen_kwargs = {"until": [], "max_gen_toks": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
    requests = []
    for index in range(count):
        words = _PROMPT_WORDS[: 8 + (index * 5) % (len(_PROMPT_WORDS) - 8)]
        prompt = f"{index}. " + " ".join(words)
        requests.append(Instance("generate_until", {}, (prompt, dict(gen_kwargs)), index, ("bench", index, 1)))
    return requests


def _variant_args(variant: str, sigma_scale: float) -> dict:
    site, _, scope = variant.rpartition(":")
    return {"sigma_scale": sigma_scale, "noise_site": site, "noise_scope": scope}


@contextmanager
def _timed_hook(totals: dict, name: str):
    """Accumulate wall time spent inside the noise hook into totals[name] (CPU only:
    on an accelerator the hook's kernels run asynchronously)."""
    from ..noise import hooks

    original = hooks._NoiseHook.__call__

    def timed(self, *args):
        start = time.perf_counter()
        try:
            return original(self, *args)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - start

    hooks._NoiseHook.__call__ = timed
    try:
        yield
    finally:
        hooks._NoiseHook.__call__ = original


def run(args) -> int:
    from lm_eval.models.huggingface import HFLM

    from ..harness.model import HFNoiseLM

    model, tokenizer = build_bench_model(args)
    common = {"pretrained": model, "tokenizer": tokenizer, "batch_size": args.batch_size}
    lms = {"hf": HFLM(**common)}
    for variant in args.variants.split(","):
        lms[f"hf-noise {variant}"] = HFNoiseLM(**common, **_variant_args(variant, args.sigma_scale))
    requests = _requests(args.prompts, args.new_tokens)
    tokens = args.prompts * args.new_tokens

    for lm in lms.values():  # warm-up, untimed
        lm.generate_until(requests[: args.batch_size], disable_tqdm=True)
    seconds = {name: [] for name in lms}
    hook_seconds: dict[str, float] = {}
    names = list(lms)
    on_cpu = torch.device(args.device).type == "cpu"
    for round_index in tqdm(range(args.rounds), desc="bench rounds"):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            with _timed_hook(hook_seconds, name) if on_cpu else nullcontext():
                start = time.perf_counter()
                lms[name].generate_until(requests, disable_tqdm=True)
                seconds[name].append(time.perf_counter() - start)

    baseline = tokens / statistics.median(seconds["hf"])
    print(
        f"\ngeneration throughput, {args.device} {args.dtype}, hidden {args.hidden}, "
        f"{args.layers} layers, vocab {args.vocab}, batch {args.batch_size}, "
        f"{args.prompts} prompts x {args.new_tokens} new tokens, median of {args.rounds} rounds"
    )
    print(f"{'model':<36}{'tokens/s':>12}{'ratio vs hf':>14}{'time in hook':>14}")
    for name, times in seconds.items():
        rate = tokens / statistics.median(times)
        share = f"{hook_seconds.get(name, 0.0) / sum(times):.2%}" if on_cpu else "n/a"
        print(f"{name:<36}{rate:>12.1f}{rate / baseline:>14.3f}{share:>14}")
    return 0
