"""Generation throughput of vllm-noise against hf-noise, same run, same requests, same
noise: a randomly initialised Llama-style model saved to a temporary folder (vLLM loads
from a path), greedy requests of a fixed number of new tokens, each engine timed round
by round after a warm-up, medians reported with the ratio vllm-noise / hf-noise.
"""

from __future__ import annotations

import tempfile

from .common import build_bench_model, print_rates, timed_rounds
from .noise import bench_requests


def run(args) -> int:
    from ..harness.model import HFNoiseLM
    from ..harness.vllm_model import VLLMNoiseLM

    noise = {"sigma_scale": args.sigma_scale, "noise_site": args.site, "noise_scope": args.scope}
    requests = bench_requests(args.prompts, args.new_tokens)
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
        seconds, answers = timed_rounds({name: lambda lm=lm: lm.generate_until(requests, disable_tqdm=True)
                                         for name, lm in lms.items()}, args.rounds, "bench rounds")
    same = sum(a == b for a, b in zip(answers["hf-noise"], answers["vllm-noise"]))
    print(f"\ngeneration throughput, {args.device} {args.dtype}, hidden {args.hidden}, {args.layers} layers, "
          f"vocab {args.vocab}, {args.site} {args.scope} sigma_scale {args.sigma_scale}, {args.prompts} prompts x "
          f"{args.new_tokens} new tokens (hf-noise batch {args.batch_size}, vLLM its own), median of {args.rounds} "
          f"rounds; {same} of {args.prompts} answers identical")
    print_rates(seconds, args.prompts * args.new_tokens, "hf-noise", 16, "ratio vs hf-noise")
    return 0
