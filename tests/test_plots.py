"""The sweep's plots, drawn from simulated sweeps (code and chat) whose content is known."""

from __future__ import annotations

import numpy as np
import pytest
from sweep_simulation import sweep

from lm_eval_noise.tools.sweep import plots
from lm_eval_noise.tools.sweep.report import judge_sweep
from lm_eval_noise.tools.sweep.verdict import THRESHOLDS

pytest.importorskip("matplotlib")


def _entries(runs, task, samples=10):
    return [{"name": r["name"], "group": r["name"], "model": "toy", "task": task, "method": r["method"],
             "temperature": r["temperature"], "noise_scale": r["scale"], "samples": samples, "self_scored": False,
             "per_problem": {m: {str(p): v for p, v in values.items()} for m, values in r["per_problem"].items()}}
            for r in runs]


def _board(entries):
    return {"sweep": "simulated", "runs": entries, "verdicts": judge_sweep(entries, THRESHOLDS, "reference")}


def _chat_runs(rng, problems=40):
    """Quality falls and edit distance rises with temperature; one noise run sits above the curve."""
    runs = []
    for name, method, temperature, lift in (("greedy", "greedy", 0.0, 0.0), ("temperature-0.3", "temperature", 0.3, 0),
                                            ("temperature-0.6", "temperature", 0.6, 0),
                                            ("temperature-1.0", "temperature", 1.0, 0.0),
                                            ("noise-embed", "noise", 0.7, 0.3)):
        runs.append({"name": name, "method": method, "temperature": temperature if method == "temperature" else None,
                     "scale": 0.1 if method == "noise" else None, "per_problem": {
                         "ref_logprob_mean": {p: -1.5 - temperature + lift + rng.normal(0, 0.2)
                                              for p in range(problems)},
                         "edit_distance_matched": {
                             p: float(np.clip(0.05 + 0.5 * temperature + rng.normal(0, 0.03), 0, 1))
                             for p in range(problems)}}})
    return runs


def test_code_sweep_plots_every_view(tmp_path):
    runs = sweep(np.random.default_rng(0), problems=30, noise=[("noise-better", 0.6, 0.2), ("noise-same", 0.6, 0.0)])
    board = _board(_entries(runs, "humaneval_noise"))
    written = plots.write_plots(board, tmp_path)
    assert [p.name for p in written] == ["passk_vs_k.png", "correctness_vs_diversity.png",
                                         "matched_differences.png", "per_problem.png"]
    assert all(p.stat().st_size > 10_000 for p in written)


def test_chat_sweep_has_no_passk_plot_and_uses_the_chat_axes(tmp_path):
    board = _board(_entries(_chat_runs(np.random.default_rng(1)), "lmsys_noise", samples=4))
    assert plots.shared_axes(plots._runs_of(board["runs"])) == ("chat", "edit_distance_matched", ["ref_logprob_mean"])
    written = plots.write_plots(board, tmp_path)
    assert [p.name for p in written] == ["correctness_vs_diversity.png", "matched_differences.png", "per_problem.png"]
    assert board["verdicts"][0]["verdict"] == "success"


def test_two_tasks_get_a_set_of_plots_each(tmp_path):
    code = _entries(sweep(np.random.default_rng(2), problems=12, noise=[("noise-a", 0.6, 0.0)]), "humaneval_noise")
    chat = _entries(_chat_runs(np.random.default_rng(3), problems=12), "lmsys_noise", samples=4)
    names = {p.name for p in plots.write_plots(_board(code + chat), tmp_path)}
    assert "passk_vs_k-toy-humaneval_noise.png" in names and "per_problem-toy-lmsys_noise.png" in names
    assert not any(name.startswith("passk_vs_k-toy-lmsys") for name in names)


def test_a_run_without_the_verdicts_metrics_does_not_hide_the_plots(tmp_path):
    runs = sweep(np.random.default_rng(4), problems=12, noise=[("noise-a", 0.6, 0.0)])
    runs.append({"name": "nucleus-0.9", "method": "nucleus", "temperature": None, "scale": None,
                 "per_problem": {"distinct_2": dict(runs[1]["per_problem"]["distinct_2"])}})  # no pass@k
    written = plots.write_plots(_board(_entries(runs, "humaneval_noise")), tmp_path)
    assert [p.name for p in written] == ["passk_vs_k.png", "correctness_vs_diversity.png",
                                         "matched_differences.png", "per_problem.png"]


def test_no_matched_differences_plot_when_no_run_sits_on_the_curve(tmp_path):
    """Collapse (and any verdict without a curve contrast) leaves nothing to draw: no empty
    panel titled "0 problems"."""
    runs = sweep(np.random.default_rng(5), problems=30, noise=[("collapsed", 0.6, 0.0, 0.5)])
    board = _board(_entries(runs, "humaneval_noise"))
    assert board["verdicts"][0]["verdict"] == "null" and "matched" not in board["verdicts"][0]
    names = [p.name for p in plots.write_plots(board, tmp_path)]
    assert "matched_differences.png" not in names and "correctness_vs_diversity.png" in names
