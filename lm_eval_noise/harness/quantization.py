"""bitsandbytes loading that works with transformers 5.

Stock HFLM forwards `load_in_8bit=True` to the model constructor, which transformers 5
rejects, and it always passes its own `quantization_config`, so a user's cannot get
through model_args. HFNoiseLM builds the config here and hands it to from_pretrained.
"""

from __future__ import annotations

import torch
from transformers import BitsAndBytesConfig


def bitsandbytes_config(quantization: str, dtype="auto") -> BitsAndBytesConfig:
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "int4":
        compute = dtype if isinstance(dtype, torch.dtype) else _named_dtype(dtype)
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute
        )
    raise ValueError(f"no bitsandbytes config for quantization={quantization!r}")


def _named_dtype(name) -> torch.dtype:
    if name in (None, "auto"):
        return torch.bfloat16
    return getattr(torch, str(name))
