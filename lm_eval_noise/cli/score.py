"""`lm-eval-noise score --samples S... --model M [--gguf-file F]`: every generated answer
of lm-eval samples files scored under a reference model (F: a GGUF checkpoint inside M):
per-token and total log-probs given the formatted prompt the model saw. Writes
SAMPLES.scores.jsonl (one record per answer, for `viz --scores`) and
SAMPLES.scores.summary.json into --output, SAMPLES being the first samples file's name."""

from __future__ import annotations

import json
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--samples", nargs="+", required=True, help="samples_*.jsonl from --log_samples")
    parser.add_argument("--model", required=True, help="the reference model: hub id or local path")
    parser.add_argument("--gguf-file", help="a GGUF checkpoint inside --model, as gguf_file= for --model hf")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("-o", "--output", help="output folder (default: the first samples file's folder)")


def run(args) -> int:
    from ..scoring.reference import load_reference
    from ..tools.score import read_answers, score_records, write_scores

    paths = [Path(p) for p in args.samples]
    answers = [answer for path in paths for answer in read_answers(path)]  # fails before any model loads
    model, tokenizer = load_reference(args.model, args.device, args.dtype, gguf_file=args.gguf_file)
    records = score_records(answers, model, tokenizer, args.batch_size)
    output = Path(args.output or paths[0].parent) / paths[0].with_suffix(".scores.jsonl").name
    summary = write_scores(records, output, reference_model=args.model,
                           reference_gguf_file=args.gguf_file, inputs=paths)
    print(json.dumps(summary, indent=2))
    print(f"wrote {output} and {output.with_suffix('.summary.json')}")
    return 0
