"""Sweep configs: a YAML file -> the list of runs it asks for.

    name: humaneval_minimal
    models:                      # one or more; `pretrained` plus any model_args
      - {pretrained: Qwen/Qwen2.5-Coder-1.5B, dtype: bfloat16}
    tasks: [humaneval_noise]
    samples: 10                  # n per prompt (task repeats), same for every method
    limit: 5                     # problems / prompts per task (optional)
    baseline: temperature-0.8    # the method runs are compared against, paired
    verdict: {pass_margin: 0.05} # optional: thresholds of the verdict (sweep/verdict.py)
    batch_size: auto             # optional: device, apply_chat_template, metadata,
    methods:                     #   gen_kwargs / model_args added to every run
      greedy: {}
      temperature: {temperature: [0.2, 0.8]}
      nucleus: {temperature: 1.0, top_p: [0.9, 0.95]}
      min_p: {temperature: 1.0, min_p: [0.05, 0.1]}
      top_k: {temperature: 1.0, top_k: [20, 50]}
      random_prefix: {length: [8, 32]}   # a random string before each sample, greedy
      noise: {sigma_scale: [0.05, 0.1], site: [embed, "layer:-8"], scope: [per_token, per_sequence],
              schedule: [constant, "exp:16"]}   # schedule: optional, as noise_schedule
      residual: {layer: 12, noise_norm: [4, 8], vectors: [1, 5]}
      custom:                    # anything else: named runs with their own args
        - {name: low-noise-prompt-only, model_args: {sigma_scale: 0.05, noise_positions: prompt}}

Every method runs the same tasks with the same n through `lm-eval-noise run`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .verdict import THRESHOLDS, thresholds

METHODS = ("greedy", "temperature", "nucleus", "min_p", "top_k", "random_prefix", "noise", "residual", "custom")
_GREEDY = {"do_sample": False}


class SweepConfigError(ValueError):
    """The sweep config is malformed; the message names the key."""


@dataclass(frozen=True)
class Run:
    name: str  # method and its values, e.g. "noise-embed-per_token-sigma0.1"
    model: str  # `pretrained`
    task: str
    model_args: dict = field(hash=False)
    gen_kwargs: dict = field(hash=False)
    method: str = ""
    noise_scale: float | None = None  # sigma_scale or noise_norm, for plots

    @property
    def run_id(self) -> str:
        """Stable for the same settings: the resume key."""
        payload = json.dumps([self.model, self.task, self.model_args, self.gen_kwargs], sort_keys=True)
        digest = hashlib.sha256(payload.encode()).hexdigest()[:8]
        model = re.sub(r"[^A-Za-z0-9.]+", "_", self.model.rstrip("/").split("/")[-1])
        return f"{self.task}--{model}--{self.name}--{digest}"


@dataclass(frozen=True)
class Sweep:
    name: str
    runs: list[Run]
    samples: int
    limit: int | None
    baseline: str | None
    batch_size: str
    device: str | None
    apply_chat_template: bool
    metadata: dict
    viz: bool
    verdict: dict = field(default_factory=lambda: dict(THRESHOLDS))  # verdict.py's thresholds


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _method_runs(method: str, spec) -> list[tuple[str, dict, dict, float | None]]:
    """(name, model_args, gen_kwargs, noise scale) for each grid point of one method."""
    if method == "greedy":
        return [("greedy", {}, dict(_GREEDY), None)]
    if method == "temperature":
        return [(f"temperature-{_fmt(t)}", {}, {"do_sample": True, "temperature": float(t), "top_p": 1.0}, None)
                for t in _as_list(spec.get("temperature", [0.8]))]
    if method == "nucleus":
        return [(f"nucleus-t{_fmt(t)}-p{_fmt(p)}", {}, {"do_sample": True, "temperature": float(t), "top_p": float(p)}, None)
                for t, p in itertools.product(_as_list(spec.get("temperature", 1.0)), _as_list(spec.get("top_p", 0.95)))]
    if method in ("min_p", "top_k"):  # truncation samplers: keep tokens by min_p or by rank
        cast = float if method == "min_p" else int
        return [(f"{method.replace('_', '')}-t{_fmt(t)}-{_fmt(v)}", {},
                 {"do_sample": True, "temperature": float(t), "top_p": 1.0, method: cast(v)}, None)
                for t, v in itertools.product(_as_list(spec.get("temperature", 1.0)),
                                              _as_list(spec.get(method, 0.1 if method == "min_p" else 50)))]
    if method == "random_prefix":  # training-free seed conditioning (Nagarajan et al., 2025)
        return [(f"prefix-{int(length)}", {"random_prefix": int(length)}, dict(_GREEDY), None)
                for length in _as_list(spec.get("length", [16]))]
    if method == "noise":
        runs = []
        axes = ("sigma_scale", "site", "scope", "schedule")
        for sigma, site, scope, schedule in itertools.product(
            _as_list(spec.get("sigma_scale", [0.1])), _as_list(spec.get("site", "embed")),
            _as_list(spec.get("scope", "per_token")), _as_list(spec.get("schedule", "constant")),
        ):
            args = {"sigma_scale": float(sigma), "noise_site": str(site), "noise_scope": scope,
                    **({} if schedule == "constant" else {"noise_schedule": str(schedule)}),
                    **{k: v for k, v in spec.items() if k not in axes}}
            name = f"noise-{site}-{scope}-sigma{_fmt(sigma)}" + ("" if schedule == "constant" else f"-{schedule}")
            runs.append((name.replace(":", ""), args, dict(_GREEDY), float(sigma)))
        return runs
    if method == "residual":
        if "layer" not in spec:
            raise SweepConfigError("methods.residual needs `layer`")
        runs = []
        for norm, count in itertools.product(_as_list(spec.get("noise_norm", [4.0])), _as_list(spec.get("vectors", [1]))):
            args = {"noise_site": f"layer:{int(spec['layer'])}", "noise_scope": "per_sequence",
                    "noise_norm": float(norm), "noise_seed": int(spec.get("seed", 0)),
                    "noise_vectors": {"count": int(count), "seed": int(spec.get("seed", 0))}}
            runs.append((f"residual-layer{int(spec['layer'])}-norm{_fmt(norm)}-k{count}", args, dict(_GREEDY), float(norm)))
        return runs
    if method == "custom":
        runs = []
        for entry in _as_list(spec):
            if not isinstance(entry, dict) or "name" not in entry:
                raise SweepConfigError("methods.custom entries need a `name`")
            args = dict(entry.get("model_args") or {})
            scale = args.get("noise_norm", args.get("sigma_scale"))
            runs.append((str(entry["name"]), args, dict(entry.get("gen_kwargs") or _GREEDY),
                         None if scale is None else float(scale)))
        return runs
    raise SweepConfigError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def load_sweep(path: str | Path) -> Sweep:
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SweepConfigError(f"cannot read sweep config {path}: {error}") from None
    if not isinstance(config, dict):
        raise SweepConfigError(f"{path}: a sweep config is a YAML mapping")
    for key in ("models", "tasks", "methods"):
        if not config.get(key):
            raise SweepConfigError(f"{path}: `{key}` is required")
    if not isinstance(config["methods"], dict):
        raise SweepConfigError(f"{path}: `methods` maps method names to their grids")
    shared_model_args = dict(config.get("model_args") or {})
    shared_gen_kwargs = dict(config.get("gen_kwargs") or {})
    runs = []
    for model in _as_list(config["models"]):
        model = {"pretrained": model} if isinstance(model, str) else dict(model)
        if "pretrained" not in model:
            raise SweepConfigError(f"{path}: every model needs `pretrained`")
        for task in _as_list(config["tasks"]):
            for method, spec in config["methods"].items():
                for name, model_args, gen_kwargs, scale in _method_runs(method, spec or {}):
                    runs.append(Run(
                        name=name, model=str(model["pretrained"]), task=str(task),
                        model_args={**model, **shared_model_args, **model_args},
                        gen_kwargs={**shared_gen_kwargs, **gen_kwargs}, method=method, noise_scale=scale,
                    ))
    names = [(r.model, r.task, r.name) for r in runs]
    if len(set(names)) != len(names):
        raise SweepConfigError(f"{path}: two runs share a name; give custom runs distinct names")
    baseline = config.get("baseline")
    if baseline is not None and baseline not in {r.name for r in runs}:
        raise SweepConfigError(f"{path}: baseline {baseline!r} is not a run; runs are {sorted({r.name for r in runs})}")
    try:
        limits = thresholds(config.get("verdict"))
    except (ValueError, TypeError) as error:
        raise SweepConfigError(f"{path}: {error}") from None
    return Sweep(
        name=str(config.get("name") or Path(path).stem), runs=runs, samples=int(config.get("samples", 10)),
        limit=config.get("limit"), baseline=baseline, batch_size=str(config.get("batch_size", "auto")),
        device=config.get("device"), apply_chat_template=bool(config.get("apply_chat_template", False)),
        metadata=dict(config.get("metadata") or {}), viz=bool(config.get("viz", False)), verdict=limits,
    )
