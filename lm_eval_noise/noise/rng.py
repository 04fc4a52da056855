"""The seeding rule and a counter-based Gaussian generator.

Determinism contract (README, "Determinism"): a sample's noise depends only on
(noise_seed, the request's content, its repeat index, the token position).

- `sample_seed` hashes the first three into one 63-bit integer, the sample's seed.
- `gaussian(seeds, positions, dim)` is a pure function of (seed, position, coordinate):
  a stateless integer hash turned into normals by Box-Muller. Nothing depends on which
  other rows share the batch, on padding, or on whether a position is computed in the
  prefill or in a cached decoding step, and the same numbers come out on any device
  (up to float32 rounding in log/cos).

The hash is Thomas Mueller's 32-bit integer mixer, evaluated in int64 tensors with
32-bit masking; its multiplier is below 2**31 so no product overflows int64.
"""

from __future__ import annotations

import hashlib
import json
import math

import torch

_MASK32 = 0xFFFFFFFF
_MULTIPLIER = 0x45D9F3B
# Odd constants that separate the independent streams derived from one key.
_STREAM_A = 0x9E3779B9
_STREAM_B = 0x85EBCA6B
_COORD_SALT = 0x27D4EB2F
# Position key of per-sequence noise: one vector for every position of a sample.
SEQUENCE_POSITION = -1
_TWO_PI = 2 * math.pi
_INV_2_24 = 1.0 / (1 << 24)


def sample_seed(noise_seed: int, content: tuple, repeat_index: int) -> int:
    """The 63-bit seed of one sample: hash of (noise_seed, content, repeat index)."""
    payload = json.dumps([int(noise_seed), list(content), int(repeat_index)], ensure_ascii=False)
    digest = hashlib.sha256(payload.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def derive_seed(seed: int, index: int) -> int:
    """A child seed: stream `index` of `seed` (e.g. a sample's random prefix)."""
    return sample_seed(seed, ("child",), index)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """In-place 32-bit avalanche hash of an int64 tensor holding values in [0, 2**32)."""
    x.bitwise_xor_(x >> 16).mul_(_MULTIPLIER).bitwise_and_(_MASK32)
    x.bitwise_xor_(x >> 16).mul_(_MULTIPLIER).bitwise_and_(_MASK32)
    return x.bitwise_xor_(x >> 16)


def _position_keys(seeds: torch.Tensor, positions: torch.Tensor, salt: int) -> torch.Tensor:
    """One 32-bit key per (row, position); seeds [B], positions [B, T] -> [B, T]."""
    low = (seeds & _MASK32)[:, None]
    high = ((seeds >> 32) & _MASK32)[:, None]
    key = _mix32((positions & _MASK32) ^ salt)
    key = _mix32(key ^ high)
    return _mix32(key ^ low)


_coord_cache: dict[tuple[int, str, int], torch.Tensor] = {}


def _coordinate_keys(count: int, device: torch.device, salt: int) -> torch.Tensor:
    cache_key = (count, str(device), salt)
    keys = _coord_cache.get(cache_key)
    if keys is None:
        keys = _mix32(torch.arange(count, dtype=torch.int64, device=device) ^ salt)
        _coord_cache[cache_key] = keys
    return keys


def _uniform24(keys: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """[B, T] keys x [P] coordinate keys -> [B, T, P] integers in [0, 2**24)."""
    bits = _mix32(keys[..., None] ^ coords)
    return bits >> 8


def gaussian(seeds: torch.Tensor, positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Standard normal float32 noise of shape [B, T, dim].

    seeds: int64 [B] sample seeds; positions: int64 [B, T] absolute positions
    (SEQUENCE_POSITION for per-sequence noise).
    """
    device = seeds.device
    pairs = (dim + 1) // 2
    key_a = _position_keys(seeds, positions, _STREAM_A)
    key_b = _position_keys(seeds, positions, _STREAM_B)
    coords = _coordinate_keys(pairs, device, _COORD_SALT)
    # u1 in (0, 1] so log(u1) is finite; u2 in [0, 1).
    u1 = _uniform24(key_a, coords).add_(1).to(torch.float32).mul_(_INV_2_24)
    angle = _uniform24(key_b, coords).to(torch.float32).mul_(_INV_2_24 * _TWO_PI)
    radius = u1.log_().mul_(-2.0).sqrt_()
    normals = torch.cat((radius * torch.cos(angle), radius * torch.sin(angle)), dim=-1)
    return normals[..., :dim]


def uniform_index(seeds: torch.Tensor, positions: torch.Tensor, count: int) -> torch.Tensor:
    """An integer in [0, count) per (row, position), from the same hash: [B, T]."""
    return _position_keys(seeds, positions, _COORD_SALT) % count
