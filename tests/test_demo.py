"""`lm-eval-noise demo` on a fresh folder: the whole pipeline, offline, with real pass rates."""

from __future__ import annotations

import json

import pytest

from lm_eval_noise.cli import main


@pytest.mark.slow
def test_demo_writes_leaderboard_plots_and_viewer(tmp_path):
    out = tmp_path / "demo: #1"  # YAML-significant characters in the path
    assert main(["demo", "-o", str(out)]) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    runs = {entry["name"]: entry for entry in board["runs"]}
    assert set(runs) == {"greedy", "temperature-1.5", "noise-embed-per_sequence-sigma0.5"}
    assert runs["greedy"]["metrics"]["pass@1"]["mean"] >= 0.75  # the trained model solves its problems
    assert runs["noise-embed-per_sequence-sigma0.5"]["metrics"]["edit_distance"]["mean"] > 0  # noise varies it
    assert (out / "leaderboard.md").read_text().startswith("# Sweep `demo`")
    assert all((out / plot).stat().st_size > 5000 for plot in board["plots"])
    html = (out / "viz.html").read_text()
    assert '"rows": [' in html and "https://" not in html
