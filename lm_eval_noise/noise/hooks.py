"""The forward hook that adds noise, and the context managers that attach it.

A hook is attached only around one batch's model call or `generate` (as lm-eval's
`hf_steered.py` does), so the model is clean outside. Within a batch the hook counts
the positions it has seen, so position p gets the same noise whether it arrives in
the prefill or in a cached decoding step of shape [B, 1, d].
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from . import sites
from .sampler import NoiseSampler
from .spec import NoiseSpec

# Bound on noise elements generated at once during a long prefill (int64 hash temporaries).
_MAX_CHUNK_ELEMENTS = 1 << 22


@dataclass
class NoiseBatch:
    """Per-row facts the hook needs, all int64 [B] on the model's device.

    pad_offsets: left-padding length (position p of a row is padded index p + offset);
    prompt_lengths: positions < this are prompt, the rest generated/continuation.
    """

    seeds: torch.Tensor
    repeats: torch.Tensor
    pad_offsets: torch.Tensor
    prompt_lengths: torch.Tensor

    @classmethod
    def build(cls, seeds, repeats=None, attention_mask=None, prompt_lengths=None, device=None):
        seeds = torch.as_tensor(seeds, dtype=torch.int64, device=device)
        size = seeds.shape[0]
        repeats = (
            torch.zeros(size, dtype=torch.int64, device=device)
            if repeats is None
            else torch.as_tensor(repeats, dtype=torch.int64, device=device)
        )
        if attention_mask is not None:  # left-padded prompts, as generate() expects
            mask = attention_mask.to(device=device, dtype=torch.int64)
            real = mask.sum(dim=1)
            pad_offsets = mask.shape[1] - real
            if prompt_lengths is None:
                prompt_lengths = real
        else:
            pad_offsets = torch.zeros(size, dtype=torch.int64, device=device)
        if prompt_lengths is None:
            # No prompt boundary known: every position counts as prompt.
            prompt_lengths = torch.full((size,), torch.iinfo(torch.int64).max, device=device)
        prompt_lengths = torch.as_tensor(prompt_lengths, dtype=torch.int64, device=device)
        return cls(seeds, repeats, pad_offsets, prompt_lengths)


class NoiseInjector:
    """Owns the hooked module, the reference norm and the sampler for one model."""

    def __init__(self, model: nn.Module, spec: NoiseSpec, tokenizer=None, max_length: int = 2048):
        dim = sites.hidden_size(model)
        layers = sites.decoder_layers(model) if spec.site == "layer" else None
        self.spec = spec.validate_for_model(dim, len(layers) if layers is not None else 0)
        self.model = model
        if self.spec.site == "embed":
            self.module = sites.unwrap(model).get_input_embeddings()
            self.reference_norm = sites.embedding_reference_norm(model)
        else:
            if tokenizer is None:
                raise ValueError("hf-noise: a layer site needs a tokenizer to measure its reference norm")
            self.module = layers[self.spec.layer]
            self.reference_norm = sites.layer_reference_norm(model, self.module, tokenizer, max_length)
        device = sites.unwrap(model).get_input_embeddings().weight.device
        self.sampler = NoiseSampler(self.spec, self.reference_norm, dim, device)
        self.device = device

    def record(self) -> dict:
        """Everything needed to rerun: settings, resolved site, reference and noise norms."""
        return {
            **self.spec.to_record(),
            "reference_norm": self.reference_norm,
            "expected_noise_norm": self.sampler.expected_norm,
            "hidden_size": self.sampler.dim,
        }

    @contextmanager
    def attached(self, batch: NoiseBatch):
        """Add noise to every forward of `self.model` inside the block, for `batch`'s rows."""
        hook = _NoiseHook(self.sampler, batch, self.spec.positions)
        handle = self.module.register_forward_hook(hook)
        try:
            yield hook
        finally:
            handle.remove()


class _NoiseHook:
    def __init__(self, sampler: NoiseSampler, batch: NoiseBatch, positions: str):
        self.sampler = sampler
        self.batch = batch
        self.positions = positions
        self.cursor = 0  # padded index of the next position this hook will see

    def __call__(self, module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        noised = self._add_noise(hidden)
        return (noised, *output[1:]) if isinstance(output, tuple) else noised

    def _add_noise(self, hidden: torch.Tensor) -> torch.Tensor:
        rows, length, dim = hidden.shape
        if rows != self.batch.seeds.shape[0]:
            raise RuntimeError(
                f"hf-noise: the model was called with {rows} rows but the noise batch has "
                f"{self.batch.seeds.shape[0]}"
            )
        start = self.cursor
        self.cursor += length
        out = hidden.clone()
        step = max(1, _MAX_CHUNK_ELEMENTS // max(1, rows * dim))
        for chunk_start in range(0, length, step):
            chunk_end = min(length, chunk_start + step)
            padded = torch.arange(start + chunk_start, start + chunk_end, device=hidden.device)
            positions = padded[None, :] - self.batch.pad_offsets[:, None]  # [B, T]
            mask = self._mask(positions)
            noise = self.sampler.sample(self.batch.seeds, self.batch.repeats, positions)
            noise = noise * mask[..., None]
            out[:, chunk_start:chunk_end] += noise.to(out.dtype)
        return out

    def _mask(self, positions: torch.Tensor) -> torch.Tensor:
        """Which (row, position) pairs get noise: real tokens in the chosen region."""
        mask = positions >= 0
        prompt = positions < self.batch.prompt_lengths[:, None]
        if self.positions == "prompt":
            mask &= prompt
        elif self.positions == "generated":
            mask &= ~prompt
        return mask


@contextmanager
def inject_noise(
    model: nn.Module,
    spec: NoiseSpec,
    seeds,
    *,
    attention_mask: torch.Tensor | None = None,
    prompt_lengths=None,
    repeats=None,
    tokenizer=None,
    injector: NoiseInjector | None = None,
):
    """Add `spec`'s noise to `model` inside the block, one sample seed per batch row.

    Pass the (left-padded) attention mask you give to `generate` so positions are
    counted from each row's first real token; positions beyond the prompt then count
    as generated. Reuse an `injector` across batches to measure the reference norm once.

        spec = NoiseSpec(sigma_scale=0.1)
        with inject_noise(model, spec, seeds=[1, 2], attention_mask=mask):
            out = model.generate(input_ids=ids, attention_mask=mask)
    """
    injector = injector or NoiseInjector(model, spec, tokenizer=tokenizer)
    batch = NoiseBatch.build(
        seeds, repeats, attention_mask, prompt_lengths, device=injector.device
    )
    with injector.attached(batch) as hook:
        yield hook
