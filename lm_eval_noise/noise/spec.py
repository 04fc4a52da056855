"""NoiseSpec: the noise settings of a run, parsed and validated from model arguments.

Everything here runs before a model is loaded, so a typo costs seconds, not a model
load. Checks that need the model (layer index, hidden size) live in `validate_for_model`.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .schedule import FORMS as SCHEDULE_FORMS
from .schedule import Schedule

SIGMA_MODES = ("norm", "coordinate")
SCOPES = ("per_token", "per_sequence")
POSITIONS = ("all", "prompt", "generated")
REFERENCES = ("vocab", "prompt")
QUANTIZATIONS = ("none", "int8", "int4")

# Every model argument this plugin owns; none of them may reach from_pretrained.
NOISE_ARGS = (
    "sigma_scale",
    "noise_norm",
    "sigma_mode",
    "noise_site",
    "noise_scope",
    "noise_positions",
    "noise_seed",
    "noise_cov_sqrt",
    "noise_vectors",
    "noise_reference",
    "noise_schedule",
)
OWNED_ARGS = NOISE_ARGS + ("quantization",)
# Prefixes that mark an argument as ours, so a typo such as `noise_scop` is caught
# instead of being forwarded to from_pretrained; near misses of our names without the
# prefix (`sgma_scale`, `noisescope`) are caught by their similarity.
_OWNED_PREFIXES = ("noise_", "sigma_")
_NEAR_MISS = 0.8  # difflib ratio; no HFLM argument comes this close to one of ours
FLOAT32_MAX = float(np.finfo(np.float32).max)
NEARLY_ONE_DIMENSIONAL = 2.0  # effective rank below which a cov_sqrt shape is warned about


class NoiseArgumentError(InputError):
    """A noise model argument is unknown, malformed or out of range; the message names the
    engine the user chose (`for_engine`)."""

    def __init__(self, argument: str, value: Any, valid: str, engine: str = "hf-noise"):
        self.argument, self.value, self.valid, self.engine = argument, value, valid, engine
        super().__init__(f"{engine}: invalid {argument}={value!r}; valid values: {valid}")

    def for_engine(self, engine: str) -> NoiseArgumentError:
        return NoiseArgumentError(self.argument, self.value, self.valid, engine)


@dataclass(frozen=True)
class NoiseSpec:
    sigma_scale: float = 0.0
    noise_norm: float | None = None
    sigma_mode: str = "norm"
    site: str = "embed"
    layer: int | None = None  # set when site == "layer"; may be negative until resolved
    scope: str = "per_token"
    positions: str = "all"
    seed: int = 0
    cov_sqrt_path: str | None = None
    vectors_path: str | None = None
    reference: str = "vocab"
    schedule: Schedule = field(default_factory=Schedule)
    # Loaded from the files named above, never passed in: a spec holds a matrix exactly
    # when it names its file, however it was built (directly, from model args, by replace).
    # Only directions count, so both are held scale-free: cov_sqrt divided by its largest
    # entry, vectors as unit rows.
    cov_sqrt: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    vectors: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    cov_sqrt_effective_rank: float | None = field(default=None, init=False)  # of A A^T, for the record

    def __post_init__(self):
        # One set of checks (and number parsing) for a spec from model args and one built
        # directly (Python API).
        object.__setattr__(self, "sigma_scale", _non_negative("sigma_scale", self.sigma_scale))
        if self.noise_norm is not None:
            object.__setattr__(self, "noise_norm", _non_negative("noise_norm", self.noise_norm))
        object.__setattr__(self, "seed", _integer("noise_seed", self.seed))
        _choice("sigma_mode", self.sigma_mode, SIGMA_MODES)
        _choice("noise_scope", self.scope, SCOPES)
        _choice("noise_positions", self.positions, POSITIONS)
        _choice("noise_reference", self.reference, REFERENCES)
        if self.site not in ("embed", "layer") or (self.site == "layer") != isinstance(self.layer, int):
            raise NoiseArgumentError("noise_site", self.site_name, "embed, or layer:L with an integer L")
        if not isinstance(self.schedule, Schedule):
            object.__setattr__(self, "schedule", _schedule(self.schedule))
        if self.reference == "prompt" and self.noise_norm is not None:
            raise NoiseArgumentError(
                "noise_reference", "prompt", "vocab when noise_norm is given (an absolute norm has no reference)"
            )
        self._load_files()

    def _load_files(self) -> None:
        if self.cov_sqrt_path and self.vectors_path:
            raise NoiseArgumentError(
                "noise_vectors", self.vectors_path, "either noise_cov_sqrt or noise_vectors, not both"
            )
        if self.cov_sqrt_path:
            cov, rank = _load_cov_sqrt(self.cov_sqrt_path)
            object.__setattr__(self, "cov_sqrt", cov)
            object.__setattr__(self, "cov_sqrt_effective_rank", rank)
        if self.vectors_path:
            object.__setattr__(self, "vectors", _load_vectors(self.vectors_path))

    @property
    def active(self) -> bool:
        """False when no noise is added at all (outputs must equal plain `hf`)."""
        if self.noise_norm is not None:
            return self.noise_norm > 0
        return self.sigma_scale > 0

    @property
    def exact_norm(self) -> bool:
        """True when every vector has exactly the stated norm (recipe B): `noise_norm`
        given, or fixed `noise_vectors` directions. Else Gaussian (recipe A)."""
        return self.noise_norm is not None or self.vectors_path is not None

    @property
    def site_name(self) -> str:
        return "embed" if self.site == "embed" else f"layer:{self.layer}"

    @classmethod
    def from_model_args(cls, args: dict[str, Any], engine: str = "hf-noise") -> NoiseSpec:
        """Build a spec from a model-args dict, popping every noise argument from it;
        errors name `engine`."""
        try:
            return cls._from_model_args(args)
        except NoiseArgumentError as error:
            raise error.for_engine(engine) from None

    @classmethod
    def _from_model_args(cls, args: dict[str, Any]) -> NoiseSpec:
        unknown = [k for k in args if k.startswith(_OWNED_PREFIXES) and k not in NOISE_ARGS]
        if unknown:
            raise NoiseArgumentError(unknown[0], args[unknown[0]], ", ".join(NOISE_ARGS))
        for key in args:
            close = difflib.get_close_matches(key, OWNED_ARGS + ("random_prefix",), n=1, cutoff=_NEAR_MISS)
            if close and close[0] != key:
                raise NoiseArgumentError(key, args[key], f"a noise argument: did you mean {close[0]}?")
        raw = {k: args.pop(k) for k in NOISE_ARGS if k in args}
        site, layer = _parse_site(raw.get("noise_site", "embed"))
        spec = cls(
            sigma_scale=raw.get("sigma_scale", 0.0),  # numbers parsed in __post_init__
            noise_norm=raw.get("noise_norm"),
            sigma_mode=raw.get("sigma_mode", "norm"),
            site=site,
            layer=layer,
            scope=raw.get("noise_scope", "per_token"),
            positions=raw.get("noise_positions", "all"),
            seed=raw.get("noise_seed", 0),  # parsed in __post_init__
            cov_sqrt_path=_optional_path(raw.get("noise_cov_sqrt")),
            vectors_path=_optional_path(raw.get("noise_vectors")),
            reference=raw.get("noise_reference", "vocab"),
            schedule=raw.get("noise_schedule", "constant"),  # parsed in __post_init__
        )
        return spec

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> NoiseSpec:
        """The spec a results JSON's `config.noise` record was written from (`to_record`'s
        inverse); refuses a cov_sqrt or vectors file that changed since the run."""
        for path_key, digest_key in (("cov_sqrt_path", "cov_sqrt_sha256"), ("vectors_path", "vectors_sha256")):
            path = record.get(path_key)
            if path and file_sha256(path) != record[digest_key]:
                raise InputError(f"{path} changed since the run (sha256 differs from the results JSON)")
        site, layer = _parse_site(record["site"])
        return cls(
            sigma_scale=record["sigma_scale"], noise_norm=record["noise_norm"], sigma_mode=record["sigma_mode"],
            site=site, layer=layer, scope=record["scope"], positions=record["positions"], seed=record["seed"],
            cov_sqrt_path=record["cov_sqrt_path"], vectors_path=record["vectors_path"],
            # Absent from records written before these arguments existed: their defaults.
            reference=record.get("reference", "vocab"), schedule=record.get("schedule", "constant"),
        )

    def validate_for_model(self, hidden_size: int, num_layers: int) -> NoiseSpec:
        """Check the model-dependent arguments; returns the spec with the layer made non-negative."""
        layer = self.layer
        if self.site == "layer":
            if not -num_layers <= layer < num_layers:
                raise NoiseArgumentError(
                    "noise_site",
                    f"layer:{layer}",
                    f"embed, or layer:L with {-num_layers} <= L < {num_layers} for this model",
                )
            layer %= num_layers
        for name, matrix, want in (
            ("noise_cov_sqrt", self.cov_sqrt, f"({hidden_size}, {hidden_size})"),
            ("noise_vectors", self.vectors, f"(K, {hidden_size})"),
        ):
            if matrix is not None and matrix.shape[1] != hidden_size:
                raise NoiseArgumentError(
                    name,
                    f"{self.cov_sqrt_path if name == 'noise_cov_sqrt' else self.vectors_path} (shape {matrix.shape})",
                    f"a .npy of shape {want} for this model (hidden size {hidden_size})",
                )
        return replace(self, layer=layer)

    def to_record(self) -> dict[str, Any]:
        """JSON-ready settings, with file hashes, for the results JSON."""
        record = {
            k: v for k, v in asdict(self).items()
            if k not in ("cov_sqrt", "vectors", "site", "layer", "schedule")
        }
        record["site"] = self.site_name
        record["schedule"] = self.schedule.name
        record["cov_sqrt_sha256"] = file_sha256(self.cov_sqrt_path)
        record["vectors_sha256"] = file_sha256(self.vectors_path)
        return record


def _file_key(path: str) -> tuple:
    stat = Path(path).stat()
    return str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4)
def _load_cov_sqrt_cached(key: tuple, path: str) -> tuple[np.ndarray, float]:
    return _scaled_cov_sqrt(_load_matrix("noise_cov_sqrt", path), path)


def _load_cov_sqrt(path: str) -> tuple[np.ndarray, float]:
    """(A, effective rank of A A^T), loaded and checked once per file version: a spec is
    rebuilt by `replace` (e.g. validate_for_model), and a d x d check costs seconds."""
    if not Path(path).is_file():
        raise NoiseArgumentError("noise_cov_sqrt", path, "a path to an existing .npy file (file not found)")
    return _load_cov_sqrt_cached(_file_key(path), path)


def _load_vectors(path: str) -> np.ndarray:
    """The file's rows as unit vectors: only their directions count, and normalising in
    float64, each row scaled by its largest entry first, keeps rows of 1e20 (whose
    float32 norm overflows) or of 1e-22 (whose squares underflow) exact."""
    vectors = _load_matrix("noise_vectors", path)
    largest = np.abs(vectors).max(axis=1, keepdims=True)
    if np.any(largest == 0):
        raise NoiseArgumentError("noise_vectors", path, "a (K x d) .npy matrix with no all-zero row")
    scaled = vectors / largest
    return (scaled / np.linalg.norm(scaled, axis=1, keepdims=True)).astype(np.float32)


def _scaled_cov_sqrt(factor: np.ndarray, path: str) -> tuple[np.ndarray, float]:
    """(A / max|A|, effective rank of A A^T). The noise takes only A u's direction, so A's
    scale is free: dividing by its largest entry keeps A u finite and nonzero in float32
    for any A (1e20 * I overflowed the norm to zero noise, 1e-30 * I underflowed).
    Refuses a square root that cannot shape noise; warns on a suspicious one."""
    if factor.shape[0] != factor.shape[1]:
        raise NoiseArgumentError("noise_cov_sqrt", f"{path} (shape {factor.shape})", "a square (d x d) .npy matrix")
    largest = float(np.abs(factor).max())
    if largest == 0:
        raise NoiseArgumentError("noise_cov_sqrt", path, "a matrix that is not all zero (it would add no noise)")
    matrix = factor / largest
    covariance = matrix @ matrix.T
    rank = float(np.trace(covariance)) ** 2 / float(np.sum(covariance**2))
    if rank < NEARLY_ONE_DIMENSIONAL:
        warnings.warn(f"hf-noise: noise_cov_sqrt={path} is nearly one-dimensional (effective rank {rank:.2f} "
                      f"of {factor.shape[0]}): the noise will lie along about one direction", UserWarning, stacklevel=3)
    if np.allclose(matrix, matrix.T) and not _positive_semidefinite(matrix):
        warnings.warn(f"hf-noise: noise_cov_sqrt={path} is symmetric but not positive semi-definite: is it a "
                      "covariance's square root? (lm-eval-noise covariance writes cov_sqrt.npy)", UserWarning,
                      stacklevel=3)
    return matrix.astype(np.float32), rank


def _positive_semidefinite(matrix: np.ndarray) -> bool:
    jitter = 1e-6 * float(np.abs(np.diag(matrix)).max() or 1.0)
    try:
        np.linalg.cholesky(matrix.astype(np.float64) + jitter * np.eye(matrix.shape[0]))
    except np.linalg.LinAlgError:
        return False
    return True


def _parse_site(value: Any) -> tuple[str, int | None]:
    valid = "embed, or layer:L with an integer L (negative counts from the end)"
    text = str(value).strip()
    if text == "embed":
        return "embed", None
    kind, sep, index = text.partition(":")
    if kind == "layer" and sep:
        try:
            return "layer", _integer("noise_site", index)
        except NoiseArgumentError:
            pass
    raise NoiseArgumentError("noise_site", value, valid)


def _schedule(value: Any) -> Schedule:
    try:
        return Schedule.parse(value)
    except ValueError:
        raise NoiseArgumentError(
            "noise_schedule", value, ", ".join(SCHEDULE_FORMS) + " (N, H > 0; N, K integers)"
        ) from None


def _non_negative(name: str, value: Any) -> float:
    """A number >= 0 that the noise (float32) can hold: beyond FLOAT32_MAX it is inf."""
    valid = f"a number >= 0 and at most {FLOAT32_MAX:.4g} (float32's largest)"
    if isinstance(value, bool):
        raise NoiseArgumentError(name, value, valid)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise NoiseArgumentError(name, value, valid) from None
    if not 0 <= number <= FLOAT32_MAX:  # also NaN
        raise NoiseArgumentError(name, value, valid)
    return number


def _integer(name: str, value: Any) -> int:
    """An int as given (2**53 + 1 stays itself); an integral float only where it is exact
    (some parsers turn "-1" into -1.0)."""
    if isinstance(value, bool):
        raise NoiseArgumentError(name, value, "an integer")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(text, 10)
    except ValueError:
        pass
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise NoiseArgumentError(name, value, "an integer") from None
    if not number.is_integer() or abs(number) > 2**53:  # beyond 2**53 a float is not the integer meant
        raise NoiseArgumentError(name, value, "an integer (written as one, not as a float)")
    return int(number)


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise NoiseArgumentError(name, value, ", ".join(valid))
    return value


def _optional_path(value: Any) -> str | None:
    return None if value in (None, "", "none", "None") else str(value)


def _load_matrix(name: str, path: str) -> np.ndarray:
    valid = "a path to an existing .npy file holding a 2-D real (not complex) matrix"
    if not Path(path).is_file():
        raise NoiseArgumentError(name, path, valid + " (file not found)")
    try:
        matrix = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001  (numpy raises several types for a malformed file)
        raise NoiseArgumentError(name, path, f"{valid} (could not read it: {exc})") from None
    real = np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)
    if matrix.ndim != 2 or matrix.size == 0 or not real:  # complex: its imaginary part would be dropped
        raise NoiseArgumentError(name, f"{path} (shape {matrix.shape}, dtype {matrix.dtype})", valid)
    matrix = matrix.astype(np.float64)
    if not np.all(np.isfinite(matrix)):
        raise NoiseArgumentError(name, path, valid + " with finite values only")
    return matrix


def file_sha256(path: str | None) -> str | None:
    """The hex sha256 of a file the spec names, for the record; None without one."""
    if path is None:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
