"""What the model benchmarks share: a randomly initialised Llama-style model of realistic
width, chosen on the command line."""

from __future__ import annotations

import torch


def add_model_arguments(parser) -> None:
    parser.add_argument("--hidden", type=int, default=1024, help="model width (default 1024)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def build_bench_model(args):
    """(model, tokenizer) for the parsed arguments."""
    from ..toymodels import build_model, build_tokenizer

    model = build_model(
        "llama", vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
        num_heads=max(1, args.hidden // 64), max_positions=2048,
    ).to(device=args.device, dtype=getattr(torch, args.dtype))
    return model, build_tokenizer()
