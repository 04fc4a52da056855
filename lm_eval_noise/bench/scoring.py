"""Reference scoring throughput against a plain forward pass over the same token batches,
same model, same run (the forward pass is the floor: scoring adds tokenisation and the
per-answer log-softmax)."""

from __future__ import annotations

import statistics
import time

import torch

from .common import build_bench_model


def run(args) -> int:
    from ..scoring.reference import encode_pair, padded_batches, score_responses

    model, tokenizer = build_bench_model(args)
    words = "the model answers the question about a spider with eight legs and a web".split()
    prompts = [f"<s>user: question {i} " + " ".join(words[: 4 + i % 10]) + "\nassistant:" for i in range(args.answers)]
    responses = [" " + " ".join(words * (1 + i % 4)) for i in range(args.answers)]

    pairs = [encode_pair(tokenizer, p, r, 2048) for p, r in zip(prompts, responses)]
    batches = [(ids.to(args.device), mask.to(args.device)) for _, ids, mask in padded_batches(pairs, args.batch_size)]
    tokens = sum(len(p) + len(r) for p, r in pairs)

    def forward_only():
        with torch.no_grad():
            for ids, mask in batches:
                model(input_ids=ids, attention_mask=mask).logits.sum().item()

    def scoring():
        score_responses(model, tokenizer, prompts, responses, batch_size=args.batch_size)

    forward_only(), scoring()  # warm-up
    times = {"forward pass": [], "score_responses": []}
    for round_index in range(args.rounds):
        runs = (("forward pass", forward_only), ("score_responses", scoring))
        for name, run in runs[:: 1 if round_index % 2 == 0 else -1]:
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    base = tokens / statistics.median(times["forward pass"])
    print(f"\nscoring throughput, {args.device}, hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}, "
          f"{args.answers} answers ({tokens} tokens), batch {args.batch_size}, median of {args.rounds} rounds")
    print(f"{'':<20}{'tokens/s':>12}{'ratio':>8}")
    for name, runs in times.items():
        rate = tokens / statistics.median(runs)
        print(f"{name:<20}{rate:>12.1f}{rate / base:>8.3f}")
    return 0
