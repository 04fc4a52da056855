"""How often each simulated truth gets each verdict: the rates README quotes.

    python tests/verdict_rates.py [sweeps per case, default 100]

The worlds are sweep_simulation.py's (HumanEval-like: 164 problems x 10 samples, greedy
and temperatures 0.2-1.2 unless a case says otherwise); test_verdict.py asserts bounds
on the same cases with fewer sweeps.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from sweep_simulation import Noise, World, chat_sweep, seed_coverage, sweep

from lm_eval_noise.tools.sweep.verdict import judge_runs

CASES = [
    ("0.10 above the curve", Noise("n", 0.6, 0.10), {}),
    ("0.18 above, heterogeneous per-problem effects", Noise("n", 0.6, 0.2, spread=1.5), {}),
    ("on the curve (T=0.5)", Noise("n", 0.5), {}),
    ("identical to the T=0.8 run", Noise("n", 0.8), {}),
    ("0.15 below the curve", Noise("n", 0.6, -0.15), {}),
    ("collapse (empty rate 0.5)", Noise("n", 0.6, empty=0.5), {}),
    ("pass@1 -0.08, pass@10 +0.08", Noise("n", 0.6, flatten=0.5, toward=0.3), {}),
    ("really T=0.4, temperatures 0.2 and 0.8 only", Noise("n", 0.4), {"temperatures": (0.2, 0.8)}),
    ("really T=0.4, greedy and T=0.8 only", Noise("n", 0.4), {"temperatures": (0.8,)}),
    ("T=0.8's correctness, diversity beyond the hottest (1.0)", Noise("n", 0.8, diversity=0.4),
     {"temperatures": (0.2, 0.4, 0.6, 0.8, 1.0)}),
    ("T=0.4's correctness, diversity beyond the hottest (1.0)", Noise("n", 0.4, diversity=0.7),
     {"temperatures": (0.2, 0.4, 0.6, 0.8, 1.0)}),
    ("0.02 above and 0.03 more diverse than T=0.6 (under the margin)", Noise("n", 0.6, 0.02, diversity=0.03), {}),
    ("really T=0.7, diversity falling again past T=0.8", Noise("n", 0.7),
     {"world": World(distinct=lambda t: 0.1 + 0.6 * t if t <= 0.8 else 0.58 - 1.15 * (t - 0.8))}),
    ("really T=0.3, correctness rising to T=0.5 then falling", Noise("n", 0.3),
     {"world": World(logit=lambda a, t: a + 0.6 * min(t, 0.5) - 1.6 * max(0.0, t - 0.5)),
      "temperatures": (0.2, 0.4, 0.5, 0.6, 0.8)}),
    ("really T=1.1, a cliff between T=1.1 and 1.2", Noise("n", 1.1),
     {"world": World(logit=lambda a, t: a * (1 - 0.5 * t) - 0.8 * t - 20 * max(0.0, t - 1.1))}),
    ("on the curve, temperatures 0.4 apart", Noise("n", 0.6), {"temperatures": (0.4, 0.8, 1.2)}),
    ("0.3 above, 5 problems", Noise("n", 0.6, 0.3), {"problems": 5}),
    ("on the curve, 12 problems", Noise("n", 0.6), {"problems": 12}),
    ("at the floor", Noise("n", 0.6), {"floor": True}),
]


def _rate_line(counts: Counter, total: int) -> str:
    return ", ".join(f"{verdict} {count / total:.0%}" for verdict, count in counts.most_common())


def main(sweeps: int) -> None:
    for label, noise, options in CASES:
        rng = np.random.default_rng(0)
        judged = [judge_runs(sweep(rng, noise=[noise], **options))["n"] for _ in range(sweeps)]
        seed = sum(bool(j.get("seed_criterion") and j["seed_criterion"]["met"]) for j in judged)
        print(f"{label}: {_rate_line(Counter(j['verdict'] for j in judged), sweeps)}; "
              f"seed criterion met {seed / sweeps:.0%}")
    rng = np.random.default_rng(0)
    for label, stubs in (("greedy plus 0-30 appended words", 0), ("2 of 5 answers early stops", 2)):
        runs = [judge_runs(chat_sweep(rng, stubs=stubs))["noise-padded"]["verdict"] for _ in range(sweeps // 4)]
        print(f"chat, {label}: {_rate_line(Counter(runs), len(runs))}")
    for seeds in (2, 3):
        _coverage(rng, seeds, sweeps)
    noise = [(f"n{i}", 0.2 + 0.05 * i, -0.05 * (i % 2)) for i in range(20)]
    false = [any(j["verdict"] == "success" for j in judge_runs(sweep(rng, noise=noise)).values())
             for _ in range(sweeps // 2)]
    print(f"20 runs on or 0.05 below the curve: a false success in {sum(false)} of {len(false)} sweeps")


def _coverage(rng, seeds: int, sweeps: int) -> None:
    covered, naive = seed_coverage(rng, Noise("n", 0.6, 0.05, seed_sd=0.5, seeds=seeds), sweeps)
    print(f"seed-level effect, {seeds} seeds: coverage {covered:.0%} (seed-averaged problems: {naive:.0%})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
