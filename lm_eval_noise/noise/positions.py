"""Which absolute positions a forward call of the model body computes.

Read from what the call carries, never guessed. The call's arguments differ between
transformers releases: 4.x passes `past_key_values` and `cache_position`; 5.2x passes the
cache as `cache` with `position_ids`, and `generate` drops the attention mask when no row
is padded. So, in order:
1. a 2-D attention mask covering past and current tokens: it also marks padding (-1);
2. else no row is padded: `position_ids` (what the model computes with), else
   `cache_position`, else the KV cache's length under whatever name it is passed;
3. with none of these and no cache at all, the call holds the whole sequence: 0..T-1,
   which is what the model itself computes then.
Positions stay on the device (no host sync per decoding step). Anything else (an
unreadable cache, position tensors of another shape, positional arguments) raises
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
    position_ids = kwargs.get("position_ids")
    if isinstance(position_ids, torch.Tensor):
        if position_ids.dim() != 2 or position_ids.shape[0] not in (1, rows) or position_ids.shape[1] != length:
            raise PositionsUnknown(f"position_ids of shape {tuple(position_ids.shape)} for {rows} x {length} tokens")
        return position_ids.to(device=device, dtype=torch.int64).expand(rows, length)
    cache_position = kwargs.get("cache_position")
    if isinstance(cache_position, torch.Tensor):
        if tuple(cache_position.shape) != (length,):
            raise PositionsUnknown(f"cache_position of shape {tuple(cache_position.shape)} for {length} tokens")
        return cache_position.to(device=device, dtype=torch.int64).expand(rows, length)
    start = _cache_length(kwargs)
    return torch.arange(start, start + length, device=device).expand(rows, length)


def _cache_length(kwargs: dict) -> int:
    """Tokens already in the KV cache: from a cache object under any argument name (5.x
    renamed it); 0 when the call carries no cache (a forward without past)."""
    for name, value in kwargs.items():
        if hasattr(value, "get_seq_length"):
            return int(value.get_seq_length())
        if name in _CACHE_NAMES and value is not None:
            raise PositionsUnknown(f"a {type(value).__name__} passed as {name} has no get_seq_length()")
    return 0
