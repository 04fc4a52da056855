"""Choose on dev, confirm on held-out problems (confirm.py), on simulated sweeps whose
truth is known."""

from __future__ import annotations

import numpy as np
import pytest
from sweep_simulation import Noise, sweep, truth

from lm_eval_noise.errors import InputError
from lm_eval_noise.tools.sweep.confirm import budgets, confirm, is_dev
from lm_eval_noise.tools.sweep.verdict import thresholds

LIMITS = thresholds({"dev_share": 0.5})


def test_the_split_is_a_stable_hash_of_the_problem_id():
    ids = [f"HumanEval/{i}" for i in range(164)]
    dev = [p for p in ids if is_dev(p, 0.5)]
    assert 60 <= len(dev) <= 104 and dev == [p for p in ids if is_dev(p, 0.5)]
    assert not any(is_dev(p, 0.0) for p in ids)
    assert is_dev(3, 0.5) == is_dev("3", 0.5)  # ids read back from JSON as strings keep their side


def test_the_better_setting_is_chosen_on_dev_and_confirmed_on_held_out_problems():
    rng = np.random.default_rng(31)
    noise = [Noise(f"same-{i}", 0.3 + 0.1 * i) for i in range(5)] + [Noise("better", 0.6, 0.1)]
    rows = [confirm(sweep(rng, noise=noise), LIMITS) for _ in range(5)]
    assert all(row["selected"] == "better" and row["chosen_from"] == 6 for row in rows)
    assert sum(row["test"]["verdict"] == "success" for row in rows) >= 4
    assert all(70 <= row["dev"]["problems"] <= 94 and row["dev"]["problems"] + row["test"]["problems"] == 164
               for row in rows)


def test_the_winners_curse_stays_on_dev():
    """Eight settings, all on the curve: the one chosen looks better on dev than it is; on
    the held-out problems its difference is unbiased and it is no success."""
    rng = np.random.default_rng(32)
    noise = [Noise(f"same-{i}", 0.3 + 0.1 * i) for i in range(8)]
    assert all(abs(truth(n)) < 1e-9 for n in noise)
    rows = [confirm(sweep(rng, noise=noise), LIMITS) for _ in range(12)]
    dev = np.mean([row["dev"]["difference"][0] for row in rows])
    test = np.mean([row["test"]["difference"][0] for row in rows if row["test"]["difference"]])
    assert dev > test + 0.01, (dev, test)
    assert not any(row["test"]["verdict"] == "success" for row in rows)


def test_tuning_budgets_are_stated_and_an_unequal_one_named():
    runs = sweep(np.random.default_rng(33), noise=[Noise(f"n{i}", 0.5) for i in range(8)])
    assert budgets(runs) == {"noise_settings": 8, "sampling_settings": 6, "equal": False}
    runs += [{**runs[1], "name": f"nucleus-{p}", "method": "nucleus"} for p in (0.9, 0.95)]
    assert budgets(runs)["equal"]


def test_dev_share_must_be_a_share():
    with pytest.raises(InputError, match="dev_share is a share of the problems"):
        thresholds({"dev_share": 1.0})


def test_the_leaderboard_reports_the_confirmation():
    from test_plots import _entries

    from lm_eval_noise.tools.sweep.report import confirm_sweep, judge_sweep, markdown_table

    runs = sweep(np.random.default_rng(34), noise=[Noise("better", 0.6, 0.1), Noise("same", 0.5)])
    entries = [{**e, "metrics": {}, "vs_baseline": {}} for e in _entries(runs, "humaneval_noise")]
    board = {"sweep": "simulated", "engine": "hf-noise", "runs": entries, "baseline": None, "confidence": 0.95,
             "intervals": "t", "verdict_thresholds": LIMITS, "failed": [], "verdicts": judge_sweep(entries, LIMITS),
             "confirmations": confirm_sweep(entries, LIMITS)}
    table = markdown_table(board)
    assert "## Chosen on dev, confirmed on held-out problems" in table
    line = next(line for line in table.splitlines() if line.startswith("| toy | humaneval_noise | better |"))
    assert "| 2 settings |" in line and "2 noise vs 6 sampling settings |" in line
