"""Which absolute positions a forward call of the model body computes.

Read from what the call carries, never guessed. The call's arguments differ between
transformers releases: 4.x passes `past_key_values` and `cache_position`; 5.2x passes the
cache as `cache` with `position_ids`, and `generate` drops the attention mask when no row
is padded; a static cache gets a mask as long as the cache (Bloom) or a 4-D one.
- Positions: `position_ids` (what the model computes with), else `cache_position`, else
  the KV cache's length under whatever name it is passed, else (no cache at all: the
  call holds the whole sequence) 0..T-1; with a 2-D attention mask and no
  `position_ids`, the count of real tokens before each one.
- Padding (-1): from a 2-D attention mask, whose columns for this call's tokens are found
  from `cache_position` or the cache's length (the mask may run past them). A call with
  no 2-D mask marks no padding: `padding_visible` is False then, and the hooks refuse a
  left-padded batch (noise/hooks.py).
Positions stay on the device (no host sync per decoding step). Anything else (an
unreadable cache, a mask that does not cover the call, tensors of another shape,
positional arguments) raises PositionsUnknown naming the transformers version.
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


def call_positions(args: tuple, kwargs: dict, rows: int, length: int, device) -> tuple[torch.Tensor, bool]:
    """(absolute positions [rows, length], -1 for padding; whether padding was visible)."""
    if len(args) > 1:
        raise PositionsUnknown(f"the body was called with {len(args)} positional arguments")
    columns, end = _call_columns(kwargs, length, device)  # this call's tokens, as mask columns
    mask = kwargs.get("attention_mask")
    mask = mask.to(device=device, dtype=torch.int64) if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
    if mask is not None and (mask.shape[1] < length or (end is not None and end > mask.shape[1])):
        raise PositionsUnknown(f"an attention mask of {mask.shape[1]} columns does not cover this call's "
                               f"{length} tokens after its past")
    position_ids = kwargs.get("position_ids")
    if isinstance(position_ids, torch.Tensor):
        if position_ids.dim() != 2 or position_ids.shape[0] not in (1, rows) or position_ids.shape[1] != length:
            raise PositionsUnknown(f"position_ids of shape {tuple(position_ids.shape)} for {rows} x {length} tokens")
        positions = position_ids.to(device=device, dtype=torch.int64).expand(rows, length)
    elif mask is not None:
        positions = (mask.cumsum(dim=1) - 1).index_select(1, columns)
    else:
        positions = columns.expand(rows, length)
    if mask is None:
        return positions, False
    real = mask.index_select(1, columns) > 0
    return positions.masked_fill(~real, -1), True


def _call_columns(kwargs: dict, length: int, device) -> tuple[torch.Tensor, int | None]:
    """(absolute indices [length] of this call's tokens in the sequence, one past the last
    when known on the host): its past length (from `cache_position`, else the cache's
    length, else 0 without a cache) onwards."""
    cache_position = kwargs.get("cache_position")
    if isinstance(cache_position, torch.Tensor):
        if tuple(cache_position.shape) != (length,):
            raise PositionsUnknown(f"cache_position of shape {tuple(cache_position.shape)} for {length} tokens")
        on_host = cache_position.device.type == "cpu"  # read on a GPU it would cost a sync per step
        return cache_position.to(device=device, dtype=torch.int64), int(cache_position[-1]) + 1 if on_host else None
    start = cache_length(kwargs) or 0  # no cache: the call holds the whole sequence
    return torch.arange(start, start + length, device=device), start + length


def cache_length(kwargs: dict) -> int | None:
    """Tokens already in the KV cache: from a cache object under any argument name (5.x
    renamed it), None when the call carries no cache (a forward without past)."""
    for name, value in kwargs.items():
        if hasattr(value, "get_seq_length"):
            return int(value.get_seq_length())
        if name in _CACHE_NAMES and value is not None:
            raise PositionsUnknown(f"a {type(value).__name__} passed as {name} has no get_seq_length()")
    return None
