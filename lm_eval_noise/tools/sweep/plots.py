"""The sweep's plots, one set per model and task, on the verdict's own axes (verdict.py):
for code, correctness is pass@1 (the primary endpoint) and diversity Distinct-2; for
chat, quality is the reference model's mean log-prob per token and diversity the
pairwise edit distance at matched length. Every title says what its intervals rest on
(problems x samples per problem). A plot with nothing to show is not drawn.

- passk_vs_k.png (code): pass@k against k, one line per run.
- correctness_vs_diversity.png: the temperature curve from greedy (its T=0 end) through
  every temperature run, each noise run a point, 95% intervals on both axes.
- matched_differences.png: each noise run minus the temperature curve at the noise run's
  own diversity (pass@1 filled, other k hollow), with its interval, the +-margin band and
  the verdict; drawn when at least one noise run could be placed on the curve.
- per_problem.png: every problem's value under every run (greedy, temperatures, noise).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ..files import replace_atomically
from . import stats
from .verdict import CHAT_QUALITY, is_noise, merge_replicates, shared_axes

_VERDICT_COLOURS = {"success": "tab:green", "partial": "tab:blue", "null": "tab:red", "undetermined": "tab:gray"}


def _runs_of(entries: list[dict]) -> list[dict]:
    """Leaderboard entries as the verdict's runs, replicates merged, in plotting order:
    greedy, temperatures (coolest first), noise runs by scale, the rest."""
    runs = merge_replicates([{**e, "name": e["group"], "scale": e["noise_scale"]} for e in entries])

    def order(run):
        rank = {"greedy": 0, "temperature": 1}.get(run["method"], 2 if run["scale"] is not None else 3)
        return rank, run.get("temperature") or 0.0, run["scale"] or 0.0, run["name"]
    return sorted(runs, key=order)


def _label(run: dict) -> str:
    if run["method"] == "temperature":
        return f"T={run['temperature']:g}"
    return run["name"] + (f" (x{run['replicates']} seeds)" if run.get("replicates", 1) > 1 else "")


def _per_problem(run: dict, metrics: list[str]) -> dict:
    """{problem: mean over `metrics`} where the run has every one of them."""
    tables = [run["per_problem"].get(m, {}) for m in metrics]
    shared = set.intersection(*(set(t) for t in tables)) if tables else set()
    return {p: float(np.mean([t[p] for t in tables])) for p in shared}


def _interval(values, bounded: bool = True) -> tuple[float, float, float, int]:
    """The leaderboard's interval (report.metric_interval's rule) and the problems it rests on."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    mean, low, high = stats.mean_interval(values, stats.LEVEL, bounded=bounded) if values else (np.nan,) * 3
    return mean, low, high, len(values)


def _scope(entries: list[dict], problems: int) -> str:
    samples = sorted({e["samples"] for e in entries})
    return f"{problems} problems x {'/'.join(map(str, samples))} samples per problem"


def _passk_vs_k(plt, runs, entries, axes, path) -> bool:
    if axes[0] != "code":
        return False
    every_k = sorted({int(m[5:]) for run in runs for m in run["per_problem"] if m.startswith("pass@")})
    figure, axis = plt.subplots(figsize=(8, 5))
    most = 0
    for colour, run in zip(_colours(plt, runs), runs):
        points = [(k, *_interval(run["per_problem"][f"pass@{k}"].values())) for k in every_k
                  if f"pass@{k}" in run["per_problem"]]
        points = [p for p in points if p[4]]
        if not points:
            continue
        most = max(most, *(p[4] for p in points))
        ks, means = [p[0] for p in points], np.array([p[1] for p in points])
        errors = [means - [p[2] for p in points], np.array([p[3] for p in points]) - means]
        axis.errorbar(ks, means, yerr=errors, marker="o", capsize=3, label=_label(run), color=colour)
    axis.set_xscale("log")
    axis.minorticks_off()
    axis.set_xticks(every_k, [str(k) for k in every_k])
    axis.set_xlabel("k (samples drawn per problem)")
    axis.set_ylabel("pass@k (share of problems solved by at least one of k samples)")
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    axis.set_title(f"pass@k against k ({_scope(entries, most)}; 95% intervals over problems)", fontsize=10)
    return _save(plt, figure, path)


def _correctness_vs_diversity(plt, runs, entries, axes, path) -> bool:
    kind, diversity_metric, correctness = axes
    figure, axis = plt.subplots(figsize=(8, 5.5))
    points = {}
    for run in runs:
        x, y = _interval(run["per_problem"].get(diversity_metric, {}).values()), \
            _interval(_per_problem(run, correctness[:1]).values(), bounded=kind == "code")
        if x[3] and y[3]:
            points[run["name"]] = (run, x, y)
    curve = [points[r["name"]] for r in runs if r["method"] in ("greedy", "temperature") and r["name"] in points]
    if curve:
        axis.plot([p[1][0] for p in curve], [p[2][0] for p in curve], color="black", zorder=2,
                  label="temperature curve from greedy (T=0)")
    colours = dict(zip([r["name"] for r in runs], _colours(plt, runs)))
    for name, (run, x, y) in points.items():
        on_curve = run["method"] in ("greedy", "temperature")
        axis.errorbar(x[0], y[0], xerr=[[x[0] - x[1]], [x[2] - x[0]]], yerr=[[y[0] - y[1]], [y[2] - y[0]]],
                      capsize=3, marker="*" if run["method"] == "greedy" else ("o" if on_curve else "s"),
                      markersize=12 if run["method"] == "greedy" else 6, linestyle="none",
                      color="black" if on_curve else colours[name], label=None if on_curve else _label(run),
                      zorder=3)
        if on_curve:
            axis.annotate("greedy" if run["method"] == "greedy" else _label(run), (x[0], y[0]), fontsize=7,
                          xytext=(5, -10), textcoords="offset points")
    if not points:
        plt.close(figure)
        return False
    problems = max(max(p[1][3], p[2][3]) for p in points.values())
    y_name = correctness[0] if kind == "code" else f"{CHAT_QUALITY} (nats per token)"
    axis.set_xlabel(f"{diversity_metric} (higher: more diverse samples)")
    axis.set_ylabel(f"{y_name} (higher: better)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    axis.set_title(f"{'correctness' if kind == 'code' else 'quality'} against diversity "
                   f"({_scope(entries, problems)}; 95% intervals over problems)", fontsize=10)
    return _save(plt, figure, path)


def _matched_differences(plt, rows, entries, axes, path) -> bool:
    if not any(row.get("matched") for row in rows):
        return False  # no noise run could be placed on the curve: the table says why
    kind, diversity_metric, correctness = axes
    figure, axis = plt.subplots(figsize=(11, 1.8 + 0.45 * len(rows)))
    margin = rows[0].get("margin")
    for i, row in enumerate(rows):
        colour = _VERDICT_COLOURS[row["verdict"]]
        for offset, metric in enumerate(correctness):
            matched = row.get("matched", {}).get(metric)
            if matched:
                primary, middle = offset == 0, matched["difference"]
                axis.errorbar(middle, i + 0.15 * offset, xerr=[[middle - matched["low"]], [matched["high"] - middle]],
                              marker="o", capsize=3, color=colour, markerfacecolor=colour if primary else "white",
                              alpha=1.0 if primary else 0.6)
        axis.annotate(f"{row['verdict']}: {_short(row['reason'])}",
                      (1.0, i), xycoords=("axes fraction", "data"), xytext=(4, 0), textcoords="offset points",
                      va="center", fontsize=8, color=colour)
    axis.axvline(0, color="black", linewidth=1)
    if margin is not None:
        axis.axvspan(-margin, margin, color="tab:blue", alpha=0.08)
    axis.set_yticks(range(len(rows)), [row["name"] for row in rows], fontsize=8)
    axis.set_ylim(len(rows) - 0.5, -0.5)  # first row on top
    what = (f"filled: {correctness[0]}" + (f"; hollow, below: {', '.join(correctness[1:])}" if correctness[1:]
                                           else "")) if kind == "code" else CHAT_QUALITY
    band = f"; shaded: +-margin {margin:g}" if margin is not None else ""
    axis.set_xlabel(f"noise minus the temperature curve at matched {diversity_metric} ({what}{band})")
    axis.grid(alpha=0.3, axis="x")
    problems = max(row.get("problems", 0) for row in rows if row.get("matched"))
    axis.set_title(f"Noise against temperature at matched diversity, Holm-adjusted verdicts\n"
                   f"({_scope(entries, problems)}; 95% intervals, seeds and problems random)", fontsize=10)
    return _save(plt, figure, path)


def _short(reason: str, most: int = 64) -> str:
    """A verdict's reason up to its numbers (the table has the rest)."""
    head = reason.split(":")[0].split(" (")[0].split(";")[0]
    return head if len(head) <= most else head[: most - 3] + "..."


def _per_problem_view(plt, runs, entries, axes, path) -> bool:
    kind, _, correctness = axes
    tables = [_per_problem(run, correctness[:1]) for run in runs]
    problems = sorted(set().union(*tables), key=lambda p: (int(p) if str(p).isdigit() else 0, str(p)))
    if not problems:
        return False
    values = np.array([[table.get(p, np.nan) for p in problems] for table in tables])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a problem no run scored: all-NaN mean
        means = np.nanmean(values, axis=0)
    order = np.argsort(-np.nan_to_num(means, nan=-np.inf), kind="stable")
    figure, axis = plt.subplots(figsize=(min(20, max(9, 4 + 0.12 * len(problems))), 1.8 + 0.35 * len(runs)))
    image = axis.imshow(values[:, order], aspect="auto", interpolation="nearest", cmap="viridis",
                        **({"vmin": 0, "vmax": 1} if kind == "code" else {}))
    axis.set_yticks(range(len(runs)), ["greedy" if r["method"] == "greedy" else _label(r) for r in runs],
                    fontsize=7)
    if len(problems) <= 40:
        axis.set_xticks(range(len(problems)), [str(problems[i]) for i in order], fontsize=7)
    axis.set_xlabel(f"problem (document id, sorted by mean over runs; {len(problems)} problems; blank: not scored)")
    name = correctness[0]
    figure.colorbar(image, ax=axis, label=name)
    axis.set_title(f"Per problem: {name} under each run\n({_scope(entries, len(problems))})", fontsize=10)
    return _save(plt, figure, path)


def _colours(plt, runs):
    """Temperature runs in shades of grey (cool to hot), other runs in distinct colours."""
    temperatures = [r for r in runs if r["method"] == "temperature"]
    greys = iter(plt.cm.Greys(np.linspace(0.45, 0.95, max(1, len(temperatures)))))
    others = iter(plt.cm.tab10(np.arange(10)).tolist() * (1 + len(runs) // 10))
    return [("tab:red" if r["method"] == "greedy" else next(greys) if r["method"] == "temperature"
             else next(others)) for r in runs]


def _save(plt, figure, path) -> bool:
    figure.tight_layout()
    try:
        replace_atomically(path, lambda temporary: figure.savefig(temporary, dpi=120))
    finally:
        plt.close(figure)
    return True


def write_plots(board: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    groups = sorted({(e["model"], e["task"]) for e in board["runs"]})
    written = []
    for model, task in groups:
        entries = [e for e in board["runs"] if (e["model"], e["task"]) == (model, task)]
        # The verdict's axes: those greedy, the temperatures and the noise runs share;
        # other runs are drawn where they have them.
        judged = [r for r in _runs_of(entries)
                  if r["method"] in ("greedy", "temperature") or is_noise(r["method"], r["scale"])]
        axes = shared_axes(judged) if judged else None
        if axes is None:
            continue
        runs = [r for r in _runs_of(entries) if all(m in r["per_problem"] for m in (axes[1], *axes[2]))]
        rows = [r for r in board["verdicts"] if (r["model"], r["task"]) == (model, task)]
        suffix = "" if len(groups) == 1 else "-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(model).name}-{task}")
        for name, draw, data in (("passk_vs_k", _passk_vs_k, runs),
                                 ("correctness_vs_diversity", _correctness_vs_diversity, runs),
                                 ("matched_differences", _matched_differences, rows),
                                 ("per_problem", _per_problem_view, runs)):
            path = folder / f"{name}{suffix}.png"
            if draw(plt, data, entries, axes, path):
                written.append(path)
    return written

