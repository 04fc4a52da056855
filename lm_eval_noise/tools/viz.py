"""`lm-eval-noise viz`: one self-contained HTML page of the worst answers by log-prob.

Inputs are lm-eval `--log_samples` files of one or more runs. Per-token log-probs come
from `--scores` (the output of `lm-eval-noise score`) or, without it, from samples of a
task that scores in the run (lmsys_chat_noise). Each run's noise settings come from
the results JSON lm-eval wrote next to its samples. The page embeds everything (no
network, no CDN): answers sorted from the worst mean token log-prob, `--top-n` per run,
filters by run and noise scale, pages of 10, tokens coloured by log-prob (value on hover),
each run's full settings on hovering its name.
"""

from __future__ import annotations

import json
from pathlib import Path

from .samples import generation_samples

TEMPLATE = Path(__file__).with_name("viz_template.html")
PAGE_SIZE = 10


def results_for(samples: Path) -> dict:
    """The results JSON lm-eval wrote with this samples file (same timestamp), or {}."""
    stamp = samples.stem.rsplit("_", 1)[-1]
    match = samples.parent / f"results_{stamp}.json"
    return json.loads(match.read_text()) if match.is_file() else {}


def describe(config: dict) -> tuple[str, str, str]:
    """(run label, noise-scale label, settings text) of a results JSON's config. The
    settings text holds every setting of the run: model arguments, every noise field,
    generation arguments."""
    noise = config.get("noise") or {}
    model = config.get("model", "?")
    gen = ",".join(f"{k}={v}" for k, v in (config.get("gen_kwargs") or {}).items())
    if noise.get("active"):
        scale = f"noise_norm={noise['noise_norm']}" if noise.get("noise_norm") is not None \
            else f"sigma_scale={noise['sigma_scale']}"
    else:
        scale = "no noise"
    fields = {"model_args": config.get("model_args"), "gen_kwargs": config.get("gen_kwargs"),
              **{f"noise.{k}": v for k, v in sorted(noise.items()) if k != "versions"}}
    settings = " ".join(f"{k}={v}" for k, v in fields.items() if v not in (None, "", {}))
    label = " ".join(part for part in (model, scale if noise.get("active") else "", gen) if part)
    return label, scale, settings or "none"


def _run_labels(sample_files: list[Path]) -> dict[Path, tuple[str, str, str]]:
    """(label, scale, settings) per samples file: one run each, never merged. Runs whose
    short labels coincide get the part of their settings that tells them apart."""
    described = {}
    for path in sample_files:
        label, scale, settings = describe(results_for(path).get("config", {}))
        task = path.stem.rsplit("_", 1)[0].removeprefix("samples_")
        described[path] = (f"{label or '?'} [{task}]", scale, settings)
    labels = {}
    for path, (label, scale, settings) in described.items():
        twins = [p for p, d in described.items() if d[0] == label and p != path]
        if twins:
            shared = set.intersection(*(set(described[t][2].split()) for t in twins))
            differing = sorted(set(settings.split()) - shared)
            label = f"{label} ({' '.join(differing) or path.parent.name + '/' + path.name})"
        labels[path] = (label, scale, settings)
    return labels


def _scored_records(sample: dict) -> list[dict] | None:
    """Per-answer score records a scoring task left in filtered_resps, if any."""
    try:
        records = [json.loads(r) for r in sample["filtered_resps"][0]]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return records if all(isinstance(r, dict) and "token_logprobs" in r for r in records) else None


def collect_rows(sample_files: list[Path], score_files: list[Path]) -> list[dict]:
    scores = {}
    for path in score_files:
        for line in path.open(encoding="utf-8"):
            if line.strip():
                row = json.loads(line)
                scores[(row["file"], row["doc_id"], row["repeat"])] = row
    rows = []
    labels = _run_labels(sample_files)
    for path in sample_files:
        label, scale, settings = labels[path]
        for sample, prompt, responses in generation_samples(path):
            embedded = _scored_records(sample)
            for repeat in range(len(responses)):
                record = scores.get((path.name, sample["doc_id"], repeat)) or (embedded[repeat] if embedded else None)
                if record is None or not record["token_logprobs"]:
                    continue
                logprobs = record["token_logprobs"]
                rows.append({
                    "run": label, "scale": scale, "settings": settings, "doc_id": sample["doc_id"],
                    "repeat": repeat, "prompt": prompt, "tokens": record["tokens"], "logprobs": logprobs,
                    "total": sum(logprobs), "mean": sum(logprobs) / len(logprobs),
                })
    return rows


def worst(rows: list[dict], top_n: int) -> list[dict]:
    """The top_n lowest mean log-prob answers of each run, worst first."""
    chosen = []
    for run in sorted({row["run"] for row in rows}):
        chosen += sorted((r for r in rows if r["run"] == run), key=lambda r: r["mean"])[:top_n]
    return sorted(chosen, key=lambda r: r["mean"])


_SCRIPT_SAFE = {ord(c): f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"}


def render(rows: list[dict]) -> str:
    data = {
        "page_size": PAGE_SIZE,
        "runs": sorted({row["run"] for row in rows}),
        "scales": sorted({row["scale"] for row in rows}),
        "rows": rows,
    }
    # Inside <script> the HTML parser still reads `</script>` and `<!--<script>` (which
    # swallows the page's own script): every <, > and & goes in as a JSON escape, as
    # Django's json_script does; U+2028/9 are line ends to older JavaScript.
    payload = json.dumps(data, ensure_ascii=False).translate(_SCRIPT_SAFE)
    return TEMPLATE.read_text(encoding="utf-8").replace("__DATA__", payload)
