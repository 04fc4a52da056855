"""Reference scoring throughput against a plain forward pass over the same token batches,
same model, same run (the forward pass is the floor: scoring adds tokenisation and the
per-answer log-softmax)."""

from __future__ import annotations

import torch

from .common import build_bench_model, print_rates, timed_rounds


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
    seconds, _ = timed_rounds({"forward pass": forward_only, "score_responses": scoring}, args.rounds)
    print(f"\nscoring throughput, {args.device}, hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}, "
          f"{args.answers} answers ({tokens} tokens), batch {args.batch_size}, median of {args.rounds} rounds")
    print_rates(seconds, tokens, "forward pass", 20, "ratio")
    return 0
