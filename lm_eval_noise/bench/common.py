"""What the model benchmarks share: a randomly initialised Llama-style model of realistic
width, chosen on the command line (--hidden, --layers, --vocab, --device, --dtype)."""

from __future__ import annotations

import torch


def build_bench_model(args):
    """(model, tokenizer) for the parsed arguments."""
    from ..demo.toymodels import build_model, build_tokenizer

    model = build_model(
        "llama", vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
        num_heads=max(1, args.hidden // 64), max_positions=2048,
    ).to(device=args.device, dtype=getattr(torch, args.dtype))
    return model, build_tokenizer()
