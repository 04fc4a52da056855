"""`lm-eval-noise norms --model M`: the reference norm of every noise site of a model.

The numbers a user needs to pick `noise_norm`: `sigma_scale=s` at a site means noise of
(expected) norm s x that site's reference norm. embed: the mean embedding-row norm over
the vocabulary; layer:L: the mean residual-stream norm after block L on a fixed
calibration text (first position excluded).
"""

from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="hub id or local path")
    parser.add_argument("--gguf-file", help="a GGUF checkpoint inside --model, as gguf_file= for --model hf")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", action="store_true", help="print {site: norm} as JSON")


def run(args) -> int:
    from ..noise.sites import reference_norms
    from ..scoring.reference import load_reference

    model, tokenizer = load_reference(args.model, args.device, args.dtype, gguf_file=args.gguf_file)
    norms = reference_norms(model, tokenizer)
    if args.json:
        print(json.dumps(norms, indent=1))
        return 0
    print(f"{'site':<10} {'reference norm':>14}   (noise_norm = sigma_scale x reference norm)")
    for site, norm in norms.items():
        print(f"{site:<10} {norm:>14.4f}")
    return 0
