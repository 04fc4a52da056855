"""NoiseSampler: turns (sample seeds, positions) into scaled noise vectors for one spec.

Two rules (u ~ N(0, I_d), A the cov_sqrt file's matrix, n the norm):
- `sigma_scale` (recipe A, Gaussian): expected L2 norm n.
    isotropic:  v = u * n / E||u||                                     (exactly Gaussian)
    cov_sqrt:   v = (A u / ||A u||) * ||u|| * n / E||u||   (direction shaped by A A^T,
                radial spread of an isotropic Gaussian)
- `noise_norm` (recipe B, exact): every vector has L2 norm exactly n.
    isotropic:  v = u / ||u|| * n
    cov_sqrt:   v = A u / ||A u|| * n                    (recipe B's cov_sqrt @ u)
- vectors:      v = V_k / ||V_k|| * n under either rule (fixed directions, exact norm)
where E||u|| = sqrt(2) * Gamma((d+1)/2) / Gamma(d/2) is the chi mean. For the
symmetric root A = C^1/2, A u ~ N(0, C).
"""

from __future__ import annotations

import math

import torch

from .rng import SEQUENCE_POSITION, gaussian, uniform_index
from .spec import FLOAT32_MAX, NoiseArgumentError, NoiseSpec

# Bound on noise elements drawn at once (each costs a few int64 hash temporaries): a long
# prefill, or a vLLM step of thousands of tokens, is drawn in chunks of at most this many.
MAX_DRAW_ELEMENTS = 1 << 22
# How far above its expected norm one Gaussian noise vector may reach, for the check
# that it stays finite (chi(d) / E chi(d) exceeds 4 with negligible probability).
_SPREAD = 4.0


def draw_chunks(length: int, elements_per_position: int) -> list[slice]:
    """Slices of range(length) that each draw at most MAX_DRAW_ELEMENTS noise elements
    (at least one position each)."""
    step = max(1, MAX_DRAW_ELEMENTS // max(1, elements_per_position))
    return [slice(start, min(length, start + step)) for start in range(0, length, step)]


def chi_mean(dim: int) -> float:
    """E||u|| for u ~ N(0, I_dim)."""
    return math.sqrt(2.0) * math.exp(math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2))


def expected_noise_norm(spec: NoiseSpec, reference_norm: float, dim: int) -> float:
    """The expected L2 norm of one noise vector under `spec`."""
    if spec.noise_norm is not None:
        return spec.noise_norm
    if spec.sigma_mode == "coordinate":
        # The original recipe: per-coordinate std = sigma_scale * reference norm.
        return spec.sigma_scale * reference_norm * chi_mean(dim)
    return spec.sigma_scale * reference_norm


def noise_per_reference(spec: NoiseSpec, dim: int) -> float:
    """The noise norm per unit of reference norm under `sigma_scale` (what
    noise_reference=prompt multiplies each sample's own reference by)."""
    return expected_noise_norm(spec, 1.0, dim)


def noise_record(spec: NoiseSpec, reference_norm: float | None, dim: int) -> dict:
    """What a run records of its noise, for every engine: the settings (with file
    hashes), the resolved site, the reference and expected noise norms (None while the
    reference is not measured yet) and the hidden size."""
    record = {**spec.to_record(), "reference_norm": reference_norm,
              "expected_noise_norm": None if reference_norm is None else expected_noise_norm(spec, reference_norm, dim),
              "hidden_size": dim}
    if spec.reference == "prompt":
        record["noise_per_reference"] = noise_per_reference(spec, dim)
    return record


def refuse_unrepresentable(spec: NoiseSpec, expected_norm: float, reference_norm: float, largest: float,
                           dtype_name: str) -> None:
    """Noise whose vectors could exceed `largest` (inf in that dtype) is refused, naming
    the argument that set its size."""
    if math.isfinite(expected_norm) and expected_norm * _SPREAD <= largest:
        return
    if spec.noise_norm is not None:
        raise NoiseArgumentError("noise_norm", spec.noise_norm, f"a norm up to {largest / _SPREAD:.4g}, "
                                 f"so that the noise is finite in {dtype_name}")
    raise NoiseArgumentError("sigma_scale", spec.sigma_scale, f"a scale up to {largest / _SPREAD / reference_norm:.4g} "
                             f"for this model (reference norm {reference_norm:.4g}), so that the noise is finite "
                             f"in {dtype_name}")


class NoiseSampler:
    def __init__(self, spec: NoiseSpec, reference_norm: float, dim: int, device: torch.device):
        self.spec = spec
        self.dim = dim
        self.expected_norm = expected_noise_norm(spec, reference_norm, dim)
        refuse_unrepresentable(spec, self.expected_norm, reference_norm, FLOAT32_MAX, "float32")
        self._cov_sqrt = (
            None if spec.cov_sqrt is None else torch.as_tensor(spec.cov_sqrt, device=device)
        )
        self._directions = None
        if spec.vectors is not None:
            vectors = torch.as_tensor(spec.vectors, device=device)
            self._directions = vectors / vectors.norm(dim=1, keepdim=True)

    def sample(self, seeds, repeats, positions, norms: torch.Tensor | None = None) -> torch.Tensor:
        """float32 noise [B, T, d] for seeds/repeats [B] and absolute positions [B, T];
        `norms` [B] replaces `expected_norm` row by row (a per-sample reference).

        Per-sequence scope ignores `positions` and returns [B, 1, d], to be broadcast.
        """
        unit = self.unit(seeds, repeats, positions)
        if norms is None:
            return unit.mul_(self.expected_norm)
        return unit.mul_(norms.to(unit.dtype)[:, None, None])

    def unit(self, seeds: torch.Tensor, repeats: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Noise of norm exactly 1 (`spec.exact_norm`) or of expected norm 1 (Gaussian).
        The direction does not depend on the norm, so a norm sweep keeps each sample's
        directions and only rescales them."""
        per_sequence = self.spec.scope == "per_sequence"
        if per_sequence:
            positions = torch.full_like(seeds, SEQUENCE_POSITION)[:, None]
        if self._directions is not None:
            return self._fixed_directions(seeds, repeats, positions, per_sequence)
        normals = gaussian(seeds, positions, self.dim)
        radius = normals.norm(dim=-1, keepdim=True)
        if self._cov_sqrt is not None:
            normals = self._shape(normals)
        # A direction of exactly zero length is measure-zero; the clamp guards it.
        direction = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        if self.spec.exact_norm:
            return direction
        return direction.mul_(radius / chi_mean(self.dim))

    def _shape(self, normals: torch.Tensor) -> torch.Tensor:
        """Rows (A u)^T, each its own matrix-vector product. A matrix product's rounding
        depends on how many rows it multiplies at once (by up to 1e-7 between batch sizes,
        or between a prefill and a decoding step), so no row is multiplied beside another:
        a (seed, position)'s noise is bit for bit the same in any batch, block or step."""
        rows = normals.reshape(-1, self.dim)
        shaped = torch.empty_like(rows)
        for index in range(rows.shape[0]):
            torch.mv(self._cov_sqrt, rows[index], out=shaped[index])
        return shaped.reshape(normals.shape)

    def _fixed_directions(self, seeds, repeats, positions, per_sequence) -> torch.Tensor:
        count = self._directions.shape[0]
        # Per sequence, repeat i of every prompt gets row i mod K: with repeats == K each
        # prompt sees each vector once (the residual-stream runner's design).
        index = (repeats % count)[:, None] if per_sequence else uniform_index(seeds, positions, count)
        return self._directions[index].clone()
