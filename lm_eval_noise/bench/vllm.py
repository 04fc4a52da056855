"""Generation throughput of vllm-noise against stock vLLM and against hf-noise, same run,
same requests: a randomly initialised Llama-style model saved to a temporary folder
(vLLM loads from a path), greedy requests of exactly --new-tokens new tokens each.

The vLLM rows time `LLM.generate` on the same token prompts: stock vLLM (its default
compilation), vllm-noise at sigma 0 (the hook's bookkeeping only) and at --sigma-scale
(each request carrying its sample, as vllm-noise's generate_until sends it). hf-noise
runs through lm-eval's generate_until. Rounds alternate in order; medians, with each
row's ratio to stock vLLM. Beside them, per model step of the vllm-noise rows: the
milliseconds inside the noise hook and the torch operations it dispatches (the engine
runs in this process for it: VLLM_ENABLE_V1_MULTIPROCESSING=0; on an accelerator the
hook's kernels run asynchronously, so there only the ratio tells).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from contextlib import contextmanager

from .common import OperationCounter, build_bench_model, timed_rounds
from .noise import bench_requests


@contextmanager
def _measured_hook(totals: dict, count_operations: bool = False):
    """Accumulate into totals the hook's calls (steps) and seconds, or its torch
    operations (counting them slows it: a run of its own)."""
    from ..harness import vllm_worker

    original = vllm_worker._NoiseHook.__call__

    def call(self, *args):
        if count_operations:
            with OperationCounter() as counter:
                result = original(self, *args)
            totals["operations"] = totals.get("operations", 0) + counter.count
            totals["counted steps"] = totals.get("counted steps", 0) + 1
            return result
        start = time.perf_counter()
        result = original(self, *args)
        totals["seconds"] = totals.get("seconds", 0.0) + time.perf_counter() - start
        totals["steps"] = totals.get("steps", 0) + 1
        return result

    vllm_worker._NoiseHook.__call__ = call
    try:
        yield
    finally:
        vllm_worker._NoiseHook.__call__ = original


def _noisy_params(lm, requests, new_tokens: int) -> list:
    """vllm-noise's SamplingParams for `requests`, each carrying its sample."""
    from vllm import SamplingParams

    from ..harness.requests import generation_samples
    from ..harness.vllm_worker import EXTRA_ARGS_KEY

    return [SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True,
                           extra_args={EXTRA_ARGS_KEY: sample.to_wire()})
            for _, sample in generation_samples(requests, lm.noise_spec.seed, 0)]


def run(args) -> int:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the hook in this process, to time it
    from vllm import LLM, SamplingParams, TokensPrompt

    from ..harness.model import HFNoiseLM
    from ..harness.vllm_model import VLLMNoiseLM

    noise = {"noise_site": args.site, "noise_scope": args.scope}
    requests = bench_requests(args.prompts, args.new_tokens)
    for request in requests:  # vLLM's SamplingParams know no min_new_tokens; eos is rare in a random model
        request.arguments[1].pop("min_new_tokens")
    tokens = args.prompts * args.new_tokens
    with tempfile.TemporaryDirectory() as folder:
        model, tokenizer = build_bench_model(args)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        del model
        # Three engines at once: each a KV cache of its own size, not a share of the machine's memory.
        engine = {"dtype": args.dtype, "max_model_len": 512, "seed": 0,
                  "kv_cache_memory_bytes": args.kv_cache_mib << 20}
        stock = LLM(model=folder, **engine)
        quiet = VLLMNoiseLM(pretrained=folder, **engine, sigma_scale=0.0, **noise)
        noisy = VLLMNoiseLM(pretrained=folder, **engine, sigma_scale=args.sigma_scale, **noise)
        hf = HFNoiseLM(pretrained=folder, dtype=args.dtype, device=args.device, batch_size=args.batch_size,
                       sigma_scale=args.sigma_scale, **noise)
        prompts = [TokensPrompt(prompt_token_ids=stock.get_tokenizer().encode(r.args[0])) for r in requests]
        plain = SamplingParams(temperature=0, max_tokens=args.new_tokens, ignore_eos=True)
        runs = {
            "vLLM": lambda: stock.generate(prompts, plain, use_tqdm=False),
            "vllm-noise sigma 0": lambda: quiet.model.generate(prompts, _noisy_params(quiet, requests,
                                                                                     args.new_tokens), use_tqdm=False),
            f"vllm-noise sigma {args.sigma_scale:g}": lambda: noisy.model.generate(
                prompts, _noisy_params(noisy, requests, args.new_tokens), use_tqdm=False),
            "hf-noise": lambda: hf.generate_until(requests, disable_tqdm=True),
        }
        for call in runs.values():  # warm-up, untimed
            call()
        hook_totals = {name: {} for name in runs}

        def measured(name):
            with _measured_hook(hook_totals[name]):
                return runs[name]()

        seconds, _ = timed_rounds({name: lambda name=name: measured(name) for name in runs}, args.rounds,
                                  "bench rounds")
        for name, call in runs.items():
            with _measured_hook(hook_totals[name], count_operations=True):
                call()
        eager = {name: lm.model.llm_engine.vllm_config.model_config.enforce_eager
                 for name, lm in (("vllm-noise sigma 0", quiet), (f"vllm-noise sigma {args.sigma_scale:g}", noisy))}
        eager["vLLM"] = stock.llm_engine.vllm_config.model_config.enforce_eager
    print(f"\ngeneration throughput, {args.device} {args.dtype}, hidden {args.hidden}, {args.layers} layers, vocab "
          f"{args.vocab}, {args.site} {args.scope}, {args.prompts} prompts x {args.new_tokens} new tokens (hf-noise "
          f"batch {args.batch_size}, vLLM its own), median of {args.rounds} rounds")
    base = tokens / statistics.median(seconds["vLLM"])
    print(f"{'model':<24}{'tokens/s':>10}{'ratio vs vLLM':>15}{'eager':>7}{'hook ms/step':>14}{'ops/step':>10}")
    for name, times in seconds.items():
        rate = tokens / statistics.median(times)
        totals = hook_totals[name]
        steps = totals.get("steps", 0)
        hook = f"{1000 * totals['seconds'] / steps:.3f}" if steps else "-"
        operations = f"{totals['operations'] / totals['counted steps']:.0f}" if steps else "-"
        mode = {True: "yes", False: "no"}.get(eager.get(name), "-")
        print(f"{name:<24}{rate:>10.1f}{rate / base:>15.3f}{mode:>7}{hook:>14}{operations:>10}")
    return 0
