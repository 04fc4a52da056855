"""`lm-eval-noise score`: reference log-probs for the answers in lm-eval --log_samples files."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .samples import generation_samples
from .scoring import load_reference, score_responses


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="lm-eval-noise score",
        description="Score every generated answer of lm-eval samples files under a reference model: "
        "per-token and total log-probs given the formatted prompt the model saw.",
    )
    parser.add_argument("--samples", nargs="+", required=True, help="samples_*.jsonl from --log_samples")
    parser.add_argument("--reference-model", required=True, help="hub id or local path")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("-o", "--output", help="per-answer JSONL (default: SAMPLES.scores.jsonl next to the first)")
    return parser.parse_args(argv)


def read_answers(path: Path) -> list[dict]:
    """One entry per generated answer: file, doc_id, repeat, prompt, response."""
    return [
        {"file": path.name, "doc_id": sample.get("doc_id"), "repeat": repeat, "prompt": prompt, "response": response}
        for sample, prompt, responses in generation_samples(path)
        for repeat, response in enumerate(responses)
    ]


def score_answers(answers: list[dict], model, tokenizer, batch_size: int = 8) -> list[dict]:
    """Per-answer records: read_answers' fields plus the ScoredResponse record."""
    scored = score_responses(model, tokenizer, [a["prompt"] for a in answers], [a["response"] for a in answers],
                             batch_size=batch_size, progress=True)
    return [{**answer, **score.to_record()} for answer, score in zip(answers, scored)]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    paths = [Path(p) for p in args.samples]
    try:  # a malformed file fails before any model loads
        answers = [answer for path in paths for answer in read_answers(path)]
    except (OSError, ValueError) as error:
        print(f"lm-eval-noise score: {error}", file=sys.stderr)
        return 2
    model, tokenizer = load_reference(args.reference_model, args.device, args.dtype)
    records = score_answers(answers, model, tokenizer, args.batch_size)
    output = Path(args.output) if args.output else paths[0].with_suffix(".scores.jsonl")
    with output.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    means = [r["logprob_mean"] for r in records if r["num_tokens"]]
    summary = {
        "reference_model": args.reference_model,
        "inputs": [str(p) for p in paths],
        "answers": len(records),
        "logprob_mean": math.fsum(means) / len(means) if means else None,
        "logprob_total_mean": math.fsum(r["logprob_total"] for r in records) / len(records) if records else None,
    }
    output.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"wrote {output} and {output.with_suffix('.summary.json')}")
    return 0
