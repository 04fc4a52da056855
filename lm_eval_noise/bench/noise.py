"""Generation throughput of hf-noise against plain hf, same run.

Both wrap the same randomly initialised model object and generate the same greedy
requests (a fixed number of new tokens each). Runs alternate in order round by round
and the table reports medians and the ratio noise / hf. Beside it, the cost on any
machine: the torch operations the noise adds per decoding step (one counted run,
noisy minus plain; each is a kernel launch on a GPU) and, on CPU, the milliseconds
spent inside the noise hook per decoding step (on an accelerator its kernels run
asynchronously, so only the ratio tells).
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager, nullcontext

import torch
from tqdm import tqdm

from .common import OperationCounter, build_bench_model

DEFAULT_VARIANTS = "embed:per_token,embed:per_sequence,layer:-2:per_token"
_PROMPT_WORDS = (
    "Write a function that returns the sum of the squares of a list of numbers and "
    "explain how it handles empty input before you give an example of its use"
).split()


def bench_requests(count: int, new_tokens: int):
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


def _operations(lm, requests) -> int:
    with OperationCounter() as counter:
        lm.generate_until(requests, disable_tqdm=True)
    return counter.count


@contextmanager
def _timed_hook(totals: dict, name: str):
    """Accumulate wall time spent inside the noise hooks (the site's hook and the one that
    reads each call's positions) into totals[name] (CPU only: on an accelerator the
    hooks' kernels run asynchronously)."""
    from ..noise import hooks

    originals = {method: getattr(hooks._NoiseHook, method) for method in ("__call__", "read_positions")}

    def timed(original):
        def method(self, *args):
            start = time.perf_counter()
            try:
                return original(self, *args)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
        return method

    for method, original in originals.items():
        setattr(hooks._NoiseHook, method, timed(original))
    try:
        yield
    finally:
        for method, original in originals.items():
            setattr(hooks._NoiseHook, method, original)


def run(args) -> int:
    from lm_eval.models.huggingface import HFLM

    from ..harness.model import HFNoiseLM

    model, tokenizer = build_bench_model(args)
    common = {"pretrained": model, "tokenizer": tokenizer, "batch_size": args.batch_size}
    lms = {"hf": HFLM(**common)}
    for variant in args.variants.split(","):
        lms[f"hf-noise {variant}"] = HFNoiseLM(**common, **_variant_args(variant, args.sigma_scale))
    requests = bench_requests(args.prompts, args.new_tokens)
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

    # Decoding steps per run: one forward per batch and new token.
    steps = -(-args.prompts // args.batch_size) * args.new_tokens
    counted = requests[: args.batch_size]
    plain_operations = _operations(lms["hf"], counted)
    baseline = tokens / statistics.median(seconds["hf"])
    print(
        f"\ngeneration throughput, {args.device} {args.dtype}, hidden {args.hidden}, "
        f"{args.layers} layers, vocab {args.vocab}, batch {args.batch_size}, "
        f"{args.prompts} prompts x {args.new_tokens} new tokens, median of {args.rounds} rounds"
    )
    print(f"{'model':<36}{'tokens/s':>12}{'ratio vs hf':>14}{'ops/step added':>16}{'hook ms/step':>14}")
    for name, times in seconds.items():
        rate = tokens / statistics.median(times)
        added = (_operations(lms[name], counted) - plain_operations) / args.new_tokens
        hook = f"{1000 * hook_seconds.get(name, 0.0) / (steps * args.rounds):.3f}" if on_cpu else "n/a"
        print(f"{name:<36}{rate:>12.1f}{rate / baseline:>14.3f}{added:>16.1f}{hook:>14}")
    return 0
