"""Noise schedules: a multiplier of the noise at each generated position.

`g` counts generated positions from 0 (the first position after the prompt); prompt
positions always get the full noise. Forms of `noise_schedule`:
- `constant`     1 everywhere (default);
- `linear:N`     1 - g/N, reaching 0 at g = N and staying there;
- `exp:H`        0.5 ** (g / H): halves every H tokens;
- `first:K`      1 for the first K generated positions, then 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError

FORMS = ("constant", "linear:N", "exp:H", "first:K")


@dataclass(frozen=True)
class Schedule:
    kind: str = "constant"
    length: float = 0.0  # N, H or K

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """`constant`, `linear:N`, `exp:H` or `first:K`; ValueError otherwise."""
        kind, sep, value = str(text).strip().partition(":")
        if kind == "constant" and not sep:
            return cls()
        if kind in ("linear", "exp", "first") and sep:
            try:
                length = float(value)
            except ValueError:
                length = math.nan
            integral = kind == "first" or kind == "linear"
            if math.isfinite(length) and length > 0 and (not integral or length.is_integer()):
                return cls(kind, length)
        raise InputError(text)

    @property
    def name(self) -> str:
        if self.kind == "constant":
            return "constant"
        # Exact, so that the record parses back to this schedule (`:g` rounds to 6 digits).
        return f"{self.kind}:{int(self.length) if self.length.is_integer() else repr(self.length)}"

    def factor(self, generated_index: torch.Tensor) -> torch.Tensor | None:
        """float32 multipliers for generated indices (negative = prompt), or None for 1."""
        if self.kind == "constant":
            return None
        g = generated_index.clamp_min(0).to(torch.float32)
        if self.kind == "linear":
            scale = (1.0 - g / self.length).clamp_min(0.0)
        elif self.kind == "exp":
            scale = torch.exp2(-g / self.length)
        else:
            scale = (g < self.length).to(torch.float32)
        return torch.where(generated_index < 0, torch.ones_like(scale), scale)
