"""bitsandbytes loading that works with transformers 5.

Stock HFLM forwards `load_in_8bit=True` to the model constructor, which transformers 5
rejects, and it always passes its own `quantization_config`, so a user's cannot get
through model_args. HFNoiseLM builds the config here and hands it to from_pretrained,
then checks that the weights really were quantized (`model.dtype` names the dtype of
the layers left in floating point, so it cannot tell).
"""

from __future__ import annotations

from importlib.metadata import version

import torch
from torch import nn
from transformers import BitsAndBytesConfig

from ..errors import InputError, require
from ..noise import NoiseArgumentError

# The layer bitsandbytes puts in place of nn.Linear, and the dtype its weights are stored in.
_QUANTIZED_LAYERS = {"int8": ("Linear8bitLt", torch.int8), "int4": ("Linear4bit", torch.uint8)}


def bitsandbytes_config(quantization: str, dtype="auto") -> BitsAndBytesConfig:
    require("bitsandbytes", "quantization", f"quantization={quantization}")
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "int4":
        compute = dtype if isinstance(dtype, torch.dtype) else _named_dtype(dtype)
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute
        )
    raise InputError(f"no bitsandbytes config for quantization={quantization!r}")


def _named_dtype(name) -> torch.dtype:
    if name in (None, "auto"):
        return torch.bfloat16
    return getattr(torch, str(name))


def quantized_layer_count(model: nn.Module, quantization: str) -> int:
    """How many linear layers hold `quantization` weights; refuses a model in which
    bitsandbytes quantized none (it cannot on every device and release)."""
    layer_type, weight_dtype = _QUANTIZED_LAYERS[quantization]
    count = sum(type(module).__name__ == layer_type and module.weight.dtype == weight_dtype
                for module in model.modules())
    if count == 0:
        device = next(model.parameters()).device
        raise NoiseArgumentError(
            "quantization", quantization,
            f"none here: bitsandbytes {version('bitsandbytes')} left every linear layer unquantized on {device}",
        )
    return count
