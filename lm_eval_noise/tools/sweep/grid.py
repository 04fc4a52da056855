"""Sweep configs: a YAML file -> the list of runs it asks for.

    name: humaneval_minimal
    models:                      # one or more; `pretrained` plus any model_args
      - {pretrained: Qwen/Qwen2.5-Coder-1.5B, dtype: bfloat16}
    tasks: [humaneval_noise]
    engine: hf                   # optional: hf (hf-noise, default) or vllm (vllm-noise); every
                                 #   method of the sweep runs through it
    samples: 10                  # n per prompt (task repeats), same for every method
    limit: 5                     # problems / prompts per task (optional)
    baseline: temperature-0.8    # the method runs are compared against, paired
    verdict: {margin: 0.05}      # optional: thresholds of the verdict (verdict.py)
    noise_seeds: [0, 1, 2]       # optional: each noise run repeated per seed (replicates; the
                                 #   seed replaces everything random: noise_seed, the residual
                                 #   vectors' seed, lm_eval's sampling seeds)
    batch_size: auto             # optional: device, apply_chat_template, metadata,
    methods:                     #   gen_kwargs / model_args added to every run
      greedy: {}
      temperature: {temperature: [0.2, 0.8]}
      nucleus: {temperature: 1.0, top_p: [0.9, 0.95]}
      min_p: {temperature: 1.0, min_p: [0.05, 0.1]}
      top_k: {temperature: 1.0, top_k: [20, 50]}
      random_prefix: {length: [8, 32]}   # a random string before each sample, greedy
      noise: {sigma_scale: [0.05, 0.1], site: [embed, "layer:-8"], scope: [per_token, per_sequence],
              schedule: [constant, "exp:16"],    # schedule: optional, as noise_schedule
              model_args: {noise_positions: generated}}  # optional: other hf-noise args
      residual: {layer: 12, noise_norm: [4, 8], vectors: [1, 5]}  # seed: of vectors and noise (0)
      custom:                    # anything else: named runs with their own args
        - {name: low-noise-prompt-only, model_args: {sigma_scale: 0.05, noise_positions: prompt}}

Every method runs the same tasks with the same n through `lm-eval-noise run --model
hf-noise` (or `vllm-noise`), so a comparison is never confounded by the engine.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import yaml

from ...errors import InputError
from .verdict import THRESHOLDS, is_noise, thresholds

_GREEDY = {"do_sample": False}
ENGINES = {"hf": "hf-noise", "vllm": "vllm-noise"}  # a sweep's `engine:` -> the harness model of its runs


class SweepConfigError(InputError):
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
    group: str = ""  # the name its replicates share (noise runs repeated over noise_seeds); else its name
    seed: int | None = None  # its replicate's seed (noise_seeds), passed to lm_eval's --seed too; else None

    @property
    def run_id(self) -> str:
        """The run's folder name: readable, and distinct for distinct model, task, model_args
        and gen_kwargs. Not the resume key: everything that shapes the run's output (samples,
        limit, file contents, versions...) is its settings fingerprint (runner.run_settings),
        which DONE.json records and a rerun compares."""
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
    engine: str = "hf"  # a key of ENGINES

    @property
    def model(self) -> str:
        """The harness model every run of the sweep goes through."""
        return ENGINES[self.engine]


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _checked(cls, mapping, where: str):
    """`cls(**mapping)`, refusing unknown and missing keys by name."""
    names = [f.name for f in fields(cls)]
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise SweepConfigError(f"{where}: expected a mapping with keys {', '.join(names) or '(none)'}")
    unknown = sorted(set(map(str, mapping)) - set(names))
    if unknown:
        raise SweepConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(names) or '(none)'}")
    for f in fields(cls):
        if f.default is MISSING and f.default_factory is MISSING and mapping.get(f.name) in (None, [], {}):
            raise SweepConfigError(f"{where}: `{f.name}` is required")
    return cls(**mapping)


# One dataclass per method: its keys are the config keys, `points()` its grid as
# (name, model_args, gen_kwargs, noise scale for the plots).
Point = tuple[str, dict, dict, float | None]


@dataclass(frozen=True)
class Greedy:
    def points(self) -> list[Point]:
        return [("greedy", {}, dict(_GREEDY), None)]


@dataclass(frozen=True)
class Temperature:
    temperature: object = (0.8,)

    def points(self) -> list[Point]:
        return [(f"temperature-{_fmt(t)}", {}, {"do_sample": True, "temperature": float(t), "top_p": 1.0}, None)
                for t in _as_list(self.temperature)]


@dataclass(frozen=True)
class Nucleus:
    temperature: object = 1.0
    top_p: object = 0.95

    def points(self) -> list[Point]:
        return [(f"nucleus-t{_fmt(t)}-p{_fmt(p)}", {},
                 {"do_sample": True, "temperature": float(t), "top_p": float(p)}, None)
                for t, p in itertools.product(_as_list(self.temperature), _as_list(self.top_p))]


@dataclass(frozen=True)
class MinP:  # truncation sampler: keep tokens above min_p x the top probability
    temperature: object = 1.0
    min_p: object = 0.1

    def points(self) -> list[Point]:
        return [(f"minp-t{_fmt(t)}-{_fmt(v)}", {}, {"do_sample": True, "temperature": float(t), "top_p": 1.0,
                                                     "min_p": float(v)}, None)
                for t, v in itertools.product(_as_list(self.temperature), _as_list(self.min_p))]


@dataclass(frozen=True)
class TopK:  # truncation sampler: keep the k most likely tokens
    temperature: object = 1.0
    top_k: object = 50

    def points(self) -> list[Point]:
        return [(f"topk-t{_fmt(t)}-{_fmt(v)}", {}, {"do_sample": True, "temperature": float(t), "top_p": 1.0,
                                                     "top_k": int(v)}, None)
                for t, v in itertools.product(_as_list(self.temperature), _as_list(self.top_k))]


@dataclass(frozen=True)
class RandomPrefix:  # training-free seed conditioning (Nagarajan et al., 2025)
    length: object = (16,)

    def points(self) -> list[Point]:
        return [(f"prefix-{int(length)}", {"random_prefix": int(length)}, dict(_GREEDY), None)
                for length in _as_list(self.length)]


@dataclass(frozen=True)
class Noise:
    sigma_scale: object = (0.1,)
    site: object = "embed"
    scope: object = "per_token"
    schedule: object = "constant"
    model_args: dict = field(default_factory=dict)  # any other hf-noise model_args, for every point

    def points(self) -> list[Point]:
        points = []
        for sigma, site, scope, schedule in itertools.product(
            _as_list(self.sigma_scale), _as_list(self.site), _as_list(self.scope), _as_list(self.schedule)
        ):
            args = {"sigma_scale": float(sigma), "noise_site": str(site), "noise_scope": scope,
                    **({} if schedule == "constant" else {"noise_schedule": str(schedule)}), **self.model_args}
            name = f"noise-{site}-{scope}-sigma{_fmt(sigma)}" + ("" if schedule == "constant" else f"-{schedule}")
            points.append((name.replace(":", ""), args, dict(_GREEDY), float(sigma)))
        return points


@dataclass(frozen=True)
class Residual:  # recipe B: fixed random unit vectors at one layer, one per sample
    layer: int
    noise_norm: object = (4.0,)
    vectors: object = (1,)
    seed: int = 0

    def points(self) -> list[Point]:
        layer, seed = int(self.layer), int(self.seed)
        return [(f"residual-layer{layer}-norm{_fmt(norm)}-k{count}",
                 {"noise_site": f"layer:{layer}", "noise_scope": "per_sequence", "noise_norm": float(norm),
                  "noise_seed": seed, "noise_vectors": {"count": int(count), "seed": seed}},
                 dict(_GREEDY), float(norm))
                for norm, count in itertools.product(_as_list(self.noise_norm), _as_list(self.vectors))]


@dataclass(frozen=True)
class CustomRun:
    name: str
    model_args: dict = field(default_factory=dict)
    gen_kwargs: dict = field(default_factory=lambda: dict(_GREEDY))

    def points(self) -> list[Point]:
        scale = self.model_args.get("noise_norm", self.model_args.get("sigma_scale"))
        return [(str(self.name), dict(self.model_args), dict(self.gen_kwargs), None if scale is None else float(scale))]


METHODS = {"greedy": Greedy, "temperature": Temperature, "nucleus": Nucleus, "min_p": MinP, "top_k": TopK,
           "random_prefix": RandomPrefix, "noise": Noise, "residual": Residual, "custom": CustomRun}


def _method_points(method: str, spec, where: str) -> list[Point]:
    if method not in METHODS:
        raise SweepConfigError(f"{where}: unknown method {method!r}; valid: {', '.join(METHODS)}")
    entries = [(f"{where}.{method}[{i}]", entry) for i, entry in enumerate(_as_list(spec))] \
        if method == "custom" else [(f"{where}.{method}", spec)]
    try:
        return [point for at, entry in entries for point in _checked(METHODS[method], entry, at).points()]
    except (TypeError, ValueError, AttributeError) as error:
        if isinstance(error, SweepConfigError):
            raise
        raise SweepConfigError(f"{where}.{method}: {error}") from None


def _check_run_arguments(run: Run, engine: str, path) -> None:
    """The noise arguments of a run, checked before any run starts (a value typo such as
    `scope: [per_sequnce]` would otherwise fail only when its run comes)."""
    from ...noise import NoiseSpec

    if "device" in run.model_args:
        raise SweepConfigError(f"{path}: run {run.name}: `device` goes in the sweep's own `device:` key "
                               "(lm_eval passes it as --device), not in model_args")
    # A vectors mapping ({count, seed}) becomes a file when the sweep starts.
    args = {k: v for k, v in run.model_args.items() if not (k == "noise_vectors" and isinstance(v, dict))}
    try:
        NoiseSpec.from_model_args(args, engine=ENGINES[engine])
    except InputError as error:
        raise SweepConfigError(f"{path}: run {run.name}: {error}") from None


def _replicate(model_args: dict, seed: int) -> dict:
    """A noise_seeds replicate's model_args: the seed replaces every seed of the run, the
    noise's and that of random `noise_vectors: {count, seed}` directions (one set of
    directions for all replicates would make them the same experiment, not replicates)."""
    args = {**model_args, "noise_seed": seed}
    if isinstance(args.get("noise_vectors"), dict):
        args["noise_vectors"] = {**args["noise_vectors"], "seed": seed}
    return args


def _seeds(value, path) -> list[int]:
    if value is None:
        return []
    seeds = _as_list(value)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise SweepConfigError(f"{path}: `noise_seeds` is a list of distinct integers >= 0, not {value!r}")
    return seeds


def _integer(value, key: str, path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepConfigError(f"{path}: `{key}` is an integer >= 1, not {value!r}")
    return value


@dataclass(frozen=True)
class SweepConfig:
    """The keys of a sweep config file (see the module docstring)."""

    models: object
    tasks: object
    methods: dict
    name: str | None = None
    samples: int = 10
    limit: int | None = None
    baseline: str | None = None
    verdict: dict | None = None
    noise_seeds: list | None = None
    batch_size: object = "auto"
    device: str | None = None
    apply_chat_template: bool = False
    metadata: dict = field(default_factory=dict)
    model_args: dict = field(default_factory=dict)
    gen_kwargs: dict = field(default_factory=dict)
    viz: bool = False
    engine: str = "hf"


def load_sweep(path: str | Path) -> Sweep:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SweepConfigError(f"cannot read sweep config {path}: {error}") from None
    if not isinstance(raw, dict):
        raise SweepConfigError(f"{path}: a sweep config is a YAML mapping")
    config = _checked(SweepConfig, raw, str(path))
    if not isinstance(config.methods, dict):
        raise SweepConfigError(f"{path}: `methods` maps method names to their grids")
    for key in ("metadata", "model_args", "gen_kwargs"):
        if not isinstance(getattr(config, key), dict):
            raise SweepConfigError(f"{path}: `{key}` is a mapping")
    if not isinstance(config.engine, str) or config.engine not in ENGINES:
        raise SweepConfigError(f"{path}: `engine` is one of {', '.join(ENGINES)}, not {config.engine!r}")
    seeds = _seeds(config.noise_seeds, path)
    runs = []
    for model in _as_list(config.models):
        model = {"pretrained": model} if isinstance(model, str) else model
        if not isinstance(model, dict) or "pretrained" not in model:
            raise SweepConfigError(f"{path}: every model needs `pretrained`")
        for task in _as_list(config.tasks):
            for method, spec in config.methods.items():
                for name, model_args, gen_kwargs, scale in _method_points(method, spec, f"{path}: methods"):
                    noisy = is_noise(method, scale)
                    args = {**model, **config.model_args, **model_args}
                    for seed in seeds if noisy and seeds else [None]:
                        runs.append(Run(
                            name=name if seed is None else f"{name}-seed{seed}", model=str(model["pretrained"]),
                            task=str(task), model_args=args if seed is None else _replicate(args, seed),
                            gen_kwargs={**config.gen_kwargs, **gen_kwargs}, method=method, noise_scale=scale,
                            group=name, seed=seed,
                        ))
    for run in runs:
        _check_run_arguments(run, config.engine, path)
    names = [(r.model, r.task, r.name) for r in runs]
    if len(set(names)) != len(names):
        raise SweepConfigError(f"{path}: two runs share a name; give custom runs distinct names")
    if config.baseline is not None and config.baseline not in {r.name for r in runs}:
        raise SweepConfigError(
            f"{path}: baseline {config.baseline!r} is not a run; runs are {sorted({r.name for r in runs})}")
    try:
        limits = thresholds(config.verdict)
    except (ValueError, TypeError) as error:
        raise SweepConfigError(f"{path}: {error}") from None
    limit = None if config.limit is None else _integer(config.limit, "limit", path)
    return Sweep(
        name=str(config.name or Path(path).stem), runs=runs, samples=_integer(config.samples, "samples", path),
        limit=limit,
        baseline=config.baseline, batch_size=str(config.batch_size), device=config.device,
        apply_chat_template=bool(config.apply_chat_template), metadata=dict(config.metadata),
        viz=bool(config.viz), verdict=limits, engine=config.engine,
    )
