"""The sweep's plots, made to answer "does noise match temperature?" at a glance.

- pass_vs_diversity.png: pass@1 and the largest other pass@k (or, for chat tasks,
  reference log-prob) against Distinct-2. Temperature runs are one curve in temperature
  order, each noise family (method, site, scope) a curve in scale order, greedy a star,
  other samplers single points; 95% intervals on both axes; a legend, not labels.
- noise_scale.png: Distinct-2, empty and degenerate rates (and reference log-prob for
  chat tasks) against noise scale, one curve per noise family, with each temperature
  run's value as a dashed reference line.
"""

from __future__ import annotations

from pathlib import Path

from .verdict import is_noise_run

_TEMPERATURE_COLOUR = "black"


def family(entry: dict) -> str:
    """The curve a run belongs to: temperature, one per noise method/site/scope, or itself."""
    args = entry["model_args"]
    if entry["method"] == "noise":
        return f"noise {args.get('noise_site', 'embed')} {args.get('noise_scope', 'per_token')}"
    if entry["method"] == "residual":
        vectors = args.get("noise_vectors")
        count = vectors.get("count") if isinstance(vectors, dict) else "?"
        return f"residual {args.get('noise_site')} k={count}"
    return entry["method"] if entry["method"] in ("temperature", "greedy") else entry["name"]


def _temperature_runs(runs: list[dict]) -> list[dict]:
    temperature = [e for e in runs if e["method"] == "temperature"]
    return sorted(temperature, key=lambda e: e["gen_kwargs"].get("temperature", 0))


def _point(entry: dict, x_metric: str, y_metric: str):
    x, y = entry["metrics"].get(x_metric), entry["metrics"].get(y_metric)
    if not x or not y or not x["n"] or not y["n"]:
        return None
    return (x["mean"], y["mean"], [[x["mean"] - x["ci_low"]], [x["ci_high"] - x["mean"]]],
            [[y["mean"] - y["ci_low"]], [y["ci_high"] - y["mean"]]])


def _curve(axis, entries, x_metric, y_metric, label, **style):
    points = [p for p in (_point(e, x_metric, y_metric) for e in entries) if p]
    if not points:
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    xerr = [[p[2][0][0] for p in points], [p[2][1][0] for p in points]]
    yerr = [[p[3][0][0] for p in points], [p[3][1][0] for p in points]]
    axis.errorbar(xs, ys, xerr=xerr, yerr=yerr, capsize=3, label=label, **style)


def _correctness_metrics(runs: list[dict]) -> list[str]:
    present = {m for e in runs for m in e["metrics"]}
    passes = sorted((m for m in present if m.startswith("pass@")), key=lambda m: int(m[5:]))
    if passes:
        return passes[:1] + passes[-1:] if len(passes) > 1 else passes
    return ["ref_logprob_mean"] if "ref_logprob_mean" in present else []


def _pass_vs_diversity(plt, board: dict, path: Path) -> bool:
    runs = board["runs"]
    y_metrics = _correctness_metrics(runs)
    if not y_metrics or not any("distinct_2" in e["metrics"] for e in runs):
        return False
    figure, axes = plt.subplots(1, len(y_metrics), figsize=(max(8.0, 6.5 * len(y_metrics)), 5), squeeze=False)
    for axis, y_metric in zip(axes[0], y_metrics):
        temperatures = _temperature_runs(runs)
        _curve(axis, temperatures, "distinct_2", y_metric, "temperature (T increasing)",
               color=_TEMPERATURE_COLOUR, marker="o", linestyle="-", zorder=3)
        for entry in temperatures:
            point = _point(entry, "distinct_2", y_metric)
            if point:
                axis.annotate(f"T={entry['gen_kwargs'].get('temperature')}", point[:2], fontsize=7,
                              xytext=(5, -10), textcoords="offset points", color=_TEMPERATURE_COLOUR)
        families: dict[str, list] = {}
        for entry in filter(is_noise_run, runs):
            families.setdefault(family(entry), []).append(entry)
        for name, members in sorted(families.items()):
            members = sorted(members, key=lambda e: e["noise_scale"])
            _curve(axis, members, "distinct_2", y_metric, f"{name} (scale increasing)", marker="s", linestyle="--")
            colour = axis.get_lines()[-1].get_color() if axis.get_lines() else None
            for entry in members:
                point = _point(entry, "distinct_2", y_metric)
                if point:
                    axis.annotate(f"{entry['noise_scale']:g}", point[:2], fontsize=7, xytext=(5, 4),
                                  textcoords="offset points", color=colour)
        for entry in runs:
            if entry["method"] == "greedy":
                _curve(axis, [entry], "distinct_2", y_metric, "greedy", marker="*", markersize=16,
                       linestyle="none", color="tab:red", zorder=1)  # beneath a temperature run it equals
            elif entry["method"] not in ("temperature",) and not is_noise_run(entry):
                _curve(axis, [entry], "distinct_2", y_metric, entry["name"], marker="^", linestyle="none")
        axis.set_xlabel("Distinct-2 (higher: more diverse)")
        axis.set_ylabel(y_metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    figure.suptitle(f"{board['sweep']}: correctness against diversity (95% bootstrap intervals over problems)",
                    fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def _against_scale(plt, board: dict, path: Path) -> bool:
    runs = board["runs"]
    noisy = [e for e in runs if is_noise_run(e) and e["noise_scale"] is not None]
    metrics = [m for m in ("distinct_2", "empty_rate", "degenerate_rate", "ref_logprob_mean")
               if any(m in e["metrics"] for e in noisy)]
    if not noisy or not metrics:
        return False
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.3 * len(metrics), 4.5), squeeze=False)
    temperatures = _temperature_runs(runs)
    for axis, metric in zip(axes[0], metrics):
        families: dict[str, list] = {}
        for entry in noisy:
            if entry["metrics"].get(metric, {}).get("n"):
                families.setdefault(family(entry), []).append(entry)
        for name, members in sorted(families.items()):
            members.sort(key=lambda e: e["noise_scale"])
            means = [e["metrics"][metric]["mean"] for e in members]
            axis.errorbar([e["noise_scale"] for e in members], means,
                          yerr=[[m - e["metrics"][metric]["ci_low"] for m, e in zip(means, members)],
                                [e["metrics"][metric]["ci_high"] - m for m, e in zip(means, members)]],
                          marker="o", capsize=3, label=name)
        levels: dict[float, list] = {}  # temperatures with one value share one line and label
        for entry in temperatures:
            value = entry["metrics"].get(metric)
            if value and value["n"]:
                levels.setdefault(round(value["mean"], 6), []).append(entry["gen_kwargs"].get("temperature"))
        for level, temps in levels.items():
            axis.axhline(level, color=_TEMPERATURE_COLOUR, linestyle=":", linewidth=1)
            axis.annotate("T=" + ", ".join(map(str, temps)), (1.0, level), xycoords=("axes fraction", "data"),
                          fontsize=7, xytext=(2, 0), textcoords="offset points", va="center",
                          color=_TEMPERATURE_COLOUR)
        axis.set_xlabel("noise scale (sigma_scale or noise_norm)")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    figure.suptitle(f"{board['sweep']}: against noise scale; dotted lines: the temperature runs, T at the right "
                    f"(95% intervals)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def write_plots(board: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("pass_vs_diversity.png", _pass_vs_diversity), ("noise_scale.png", _against_scale)):
        if draw(plt, board, folder / name):
            written.append(folder / name)
    return written
