"""Reference log-probs of the answers in lm-eval --log_samples files, after the fact."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..scoring.reference import score_responses
from .files import write_text
from .samples import generation_samples


def read_answers(path: Path) -> list[dict]:
    """One entry per generated answer: file, doc_id, repeat, prompt, response."""
    return [
        {"file": path.name, "doc_id": sample.get("doc_id"), "repeat": repeat, "prompt": prompt, "response": response}
        for sample, prompt, responses in generation_samples(path)
        for repeat, response in enumerate(responses)
    ]


def score_records(answers: list[dict], model, tokenizer, batch_size: int = 8) -> list[dict]:
    """Per-answer records: read_answers' fields plus the ScoredResponse record."""
    scored = score_responses(model, tokenizer, [a["prompt"] for a in answers], [a["response"] for a in answers],
                             batch_size=batch_size, progress=True)
    return [{**answer, **score.to_record()} for answer, score in zip(answers, scored)]


def write_scores(records: list[dict], output: Path, *, reference_model: str, inputs: list[Path],
                 reference_gguf_file: str | None = None) -> dict:
    """The per-answer records as JSONL at `output` and a summary beside it
    (OUTPUT.summary.json); returns the summary."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    means = [r["logprob_mean"] for r in records if r["num_tokens"]]
    summary = {
        "reference_model": reference_model,
        "reference_gguf_file": reference_gguf_file,
        "inputs": [str(p) for p in inputs],
        "answers": len(records),
        "logprob_mean": math.fsum(means) / len(means) if means else None,
        "logprob_total_mean": math.fsum(r["logprob_total"] for r in records) / len(records) if records else None,
    }
    write_text(output.with_suffix(".summary.json"), json.dumps(summary, indent=2))
    return summary
