"""`lm-eval-noise score`: reference log-probs for the answers in lm-eval --log_samples files."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

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
    """One entry per generated answer: doc_id, repeat, prompt, response."""
    answers = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
                prompt = sample["arguments"]["gen_args_0"]["arg_0"]
                responses = sample["resps"][0]
            except (ValueError, KeyError, IndexError, TypeError) as error:
                raise ValueError(
                    f"{path}:{number}: not a generate_until sample of lm-eval's --log_samples "
                    f"({type(error).__name__}: {error})"
                ) from None
            for repeat, response in enumerate(responses):
                answers.append({"file": path.name, "doc_id": sample.get("doc_id"), "repeat": repeat,
                                "prompt": prompt, "response": response})
    return answers


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    paths = [Path(p) for p in args.samples]
    try:
        answers = [a for path in paths for a in read_answers(path)]
    except (OSError, ValueError) as error:
        print(f"lm-eval-noise score: {error}", file=sys.stderr)
        return 2
    model, tokenizer = load_reference(args.reference_model, args.device, args.dtype)
    scored = score_responses(
        model, tokenizer, [a["prompt"] for a in answers], [a["response"] for a in answers],
        batch_size=args.batch_size, progress=True,
    )
    output = Path(args.output) if args.output else paths[0].with_suffix(".scores.jsonl")
    with output.open("w", encoding="utf-8") as handle:
        for answer, score in zip(answers, scored):
            handle.write(json.dumps({**answer, **score.to_record()}, ensure_ascii=False) + "\n")
    means = [s.mean for s in scored if s.tokens]
    summary = {
        "reference_model": args.reference_model,
        "inputs": [str(p) for p in paths],
        "answers": len(scored),
        "logprob_mean": math.fsum(means) / len(means) if means else None,
        "logprob_total_mean": math.fsum(s.total for s in scored) / len(scored) if scored else None,
    }
    output.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"wrote {output} and {output.with_suffix('.summary.json')}")
    return 0
