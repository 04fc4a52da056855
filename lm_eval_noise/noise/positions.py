"""Which absolute positions a forward call of the model body computes.

Read from what the call carries, never guessed. The call's arguments differ between
transformers releases: 4.x passes `past_key_values` and `cache_position`; 5.2x passes the
cache as `cache` with `position_ids`, and `generate` drops the attention mask when no row
is padded. So, in order:
1. a 2-D attention mask covering past and current tokens: it also marks padding (-1);
2. else no row is padded, and the call starts at one offset for every row, read from
   `cache_position`, `position_ids` or the length of the KV cache (under any argument
   name), which must agree where several are given;
3. with none of these and no cache at all, the call holds the whole sequence: 0..T-1,
   which is what the model itself computes then.
Anything else (an unreadable cache, positional arguments, sources that disagree) raises
PositionsUnknown naming the transformers version.
"""

from __future__ import annotations

import torch

# Argument names under which transformers releases pass the KV cache to the model body.
_CACHE_NAMES = ("past_key_values", "cache", "past_key_value")


class PositionsUnknown(RuntimeError):
    def __init__(self, why: str):
        import transformers

        super().__init__(
            f"hf-noise: cannot tell which positions this model call computes ({why}; transformers "
            f"{transformers.__version__}). Noise positions are never guessed: please report this with "
            "the model and transformers version."
        )


def call_positions(args: tuple, kwargs: dict, rows: int, length: int, device) -> torch.Tensor:
    """Absolute positions [rows, length] of a body forward (-1 for padding)."""
    if len(args) > 1:
        raise PositionsUnknown(f"the body was called with {len(args)} positional arguments")
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[1] >= length:
        mask = mask.to(device=device, dtype=torch.int64)
        positions = (mask.cumsum(dim=1) - 1).masked_fill(mask == 0, -1)
        return positions[:, mask.shape[1] - length :]
    start = _unpadded_start(kwargs, rows, length)
    return torch.arange(start, start + length, device=device).expand(rows, length)


def _unpadded_start(kwargs: dict, rows: int, length: int) -> int:
    """The first position of a call whose rows are not padded, from every source given."""
    starts: dict[str, int] = {}
    cache_position = kwargs.get("cache_position")
    if isinstance(cache_position, torch.Tensor):
        starts["cache_position"] = _consecutive_start("cache_position", cache_position.reshape(1, -1), length)
    position_ids = kwargs.get("position_ids")
    if isinstance(position_ids, torch.Tensor) and position_ids.dim() == 2:
        if position_ids.shape[0] not in (1, rows):
            raise PositionsUnknown(f"position_ids of shape {tuple(position_ids.shape)} for {rows} rows")
        starts["position_ids"] = _consecutive_start("position_ids", position_ids, length)
    cache_length = _cache_length(kwargs)
    if cache_length is not None:
        starts["the KV cache's length"] = cache_length
    if len(set(starts.values())) > 1:
        raise PositionsUnknown("its sources disagree: " + ", ".join(f"{k} starts at {v}" for k, v in starts.items()))
    return next(iter(starts.values()), 0)


def _consecutive_start(name: str, positions: torch.Tensor, length: int) -> int:
    if positions.shape[1] != length:
        raise PositionsUnknown(f"{name} has {positions.shape[1]} positions for {length} tokens")
    start = positions[:, :1]
    expected = start + torch.arange(length, device=positions.device)
    if not torch.equal(positions, expected) or not torch.all(start == start[0, 0]):
        raise PositionsUnknown(f"{name} is not one run of consecutive positions shared by every row")
    return int(start[0, 0])


def _cache_length(kwargs: dict) -> int | None:
    """Tokens already in the KV cache: from a cache object under any argument name (5.x
    renamed it), None when the call carries no cache (a forward without past)."""
    for name, value in kwargs.items():
        if hasattr(value, "get_seq_length"):
            return int(value.get_seq_length())
        if name in _CACHE_NAMES and value is not None:
            raise PositionsUnknown(f"a {type(value).__name__} passed as {name} has no get_seq_length()")
    return None
