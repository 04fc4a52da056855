"""The noise core: spec, seeding, sampling and hooks. Imports no lm_eval."""

from .hooks import NoiseBatch, NoiseInjector, inject_noise
from .rng import derive_seed, gaussian, sample_seed
from .sampler import NoiseSampler, chi_mean, expected_noise_norm
from .spec import NoiseArgumentError, NoiseSpec

__all__ = [
    "NoiseArgumentError",
    "NoiseBatch",
    "NoiseInjector",
    "NoiseSampler",
    "NoiseSpec",
    "chi_mean",
    "derive_seed",
    "expected_noise_norm",
    "gaussian",
    "inject_noise",
    "sample_seed",
]
