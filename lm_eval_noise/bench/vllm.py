"""Generation throughput of vllm-noise against hf-noise, same run, same requests, same
noise: a randomly initialised Llama-style model saved to a temporary folder (vLLM loads
from a path), greedy requests of a fixed number of new tokens, each engine timed round
by round after a warm-up, medians reported with the ratio vllm-noise / hf-noise.
"""

from __future__ import annotations

import statistics
import tempfile
import time

from tqdm import tqdm

from .common import build_bench_model
from .noise import _requests


def run(args) -> int:
    from ..harness.model import HFNoiseLM
    from ..harness.vllm_model import VLLMNoiseLM

    noise = {"sigma_scale": args.sigma_scale, "noise_site": args.site, "noise_scope": args.scope}
    requests = _requests(args.prompts, args.new_tokens)
    for request in requests:  # vLLM's SamplingParams know no min_new_tokens; eos is rare in a random model
        request.arguments[1].pop("min_new_tokens")
    with tempfile.TemporaryDirectory() as folder:
        model, tokenizer = build_bench_model(args)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        del model
        common = {"pretrained": folder, "dtype": args.dtype, **noise}
        lms = {
            "hf-noise": HFNoiseLM(**common, device=args.device, batch_size=args.batch_size),
            "vllm-noise": VLLMNoiseLM(**common, max_model_len=512, seed=0),
        }
        for lm in lms.values():  # warm-up, untimed
            lm.generate_until(requests[: args.batch_size], disable_tqdm=True)
        seconds = {name: [] for name in lms}
        answers = {}
        for round_index in tqdm(range(args.rounds), desc="bench rounds"):
            for name in list(lms) if round_index % 2 == 0 else list(lms)[::-1]:
                start = time.perf_counter()
                answers[name] = lms[name].generate_until(requests, disable_tqdm=True)
                seconds[name].append(time.perf_counter() - start)
    same = sum(a == b for a, b in zip(answers["hf-noise"], answers["vllm-noise"]))
    tokens = args.prompts * args.new_tokens
    baseline = tokens / statistics.median(seconds["hf-noise"])
    print(f"\ngeneration throughput, {args.device} {args.dtype}, hidden {args.hidden}, {args.layers} layers, "
          f"vocab {args.vocab}, {args.site} {args.scope} sigma_scale {args.sigma_scale}, {args.prompts} prompts x "
          f"{args.new_tokens} new tokens (hf-noise batch {args.batch_size}, vLLM its own), median of {args.rounds} "
          f"rounds; {same} of {args.prompts} answers identical")
    print(f"{'model':<16}{'tokens/s':>12}{'ratio vs hf-noise':>20}")
    for name, times in seconds.items():
        rate = tokens / statistics.median(times)
        print(f"{name:<16}{rate:>12.1f}{rate / baseline:>20.3f}")
    return 0

