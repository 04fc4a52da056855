"""The forward hooks that add noise, and the context managers that attach them.

Hooks are attached only around one batch's model call or `generate` (as lm-eval's
`hf_steered.py` does), so the model is clean outside. Two hooks work together:
- a pre-hook on the model body reads, from the arguments of each forward call, which
  positions it computes (noise/positions.py); a forward hook on the body forgets them;
- the noise hook on the site adds noise for those positions, and refuses to run
  outside a forward of the body, where no positions are known.
So position p gets the same noise in a prefill, a cached step, a forward without cache
or a second call inside one block.

Decoding steps (one token per row, a KV cache whose length is known on the host) take
their noise from a block drawn in one go for the next _BLOCK positions of every row
(the noise is a pure function of seed, position and coordinate, so a block holds
exactly what each step would draw): a step costs a slice and an add, not the ~140
operations of drawing. The block assumes each row advances one position per step;
what each step's call says (its position_ids, cache_position and attention mask) is
kept and checked against that when the block closes, and a mismatch is an error.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from . import sites
from .positions import PositionsUnknown, cache_length, call_positions
from .sampler import NoiseSampler, draw_chunks, noise_per_reference, noise_record, refuse_unrepresentable
from .spec import NoiseSpec

_NO_BOUNDARY = torch.iinfo(torch.int64).max
# Decoding positions per row whose noise is drawn in one go (0: draw at every step).
_BLOCK = 64


@dataclass
class NoiseBatch:
    """Per-row facts the hooks need, on the model's device.

    seeds, repeats: int64 [B]; prompt_lengths: int64 [B], positions below are prompt, the
    rest generated (or continuation); left_padded: whether some row starts with padding
    (then every model call must show it, through a 2-D attention mask).
    """

    seeds: torch.Tensor
    repeats: torch.Tensor
    prompt_lengths: torch.Tensor
    left_padded: bool = False

    @classmethod
    def build(cls, seeds, repeats=None, attention_mask=None, prompt_lengths=None, device=None):
        """`attention_mask` (left-padded, as for `generate`) gives each row's prompt length
        when `prompt_lengths` is not given; with neither, every position is prompt."""
        seeds = torch.as_tensor(seeds, dtype=torch.int64, device=device)
        size = seeds.shape[0]
        repeats = (
            torch.zeros(size, dtype=torch.int64, device=device)
            if repeats is None
            else torch.as_tensor(repeats, dtype=torch.int64, device=device)
        )
        if prompt_lengths is None:
            prompt_lengths = (
                torch.full((size,), _NO_BOUNDARY, dtype=torch.int64)
                if attention_mask is None
                else attention_mask.to(torch.int64).sum(dim=1)
            )
        prompt_lengths = torch.as_tensor(prompt_lengths, dtype=torch.int64, device=device)
        left_padded = attention_mask is not None and bool((attention_mask[:, 0] == 0).any())
        return cls(seeds, repeats, prompt_lengths, left_padded=left_padded)

    def expanded(self, factor: int) -> NoiseBatch:
        """Each row `factor` times in a row: `generate` with num_beams or
        num_return_sequences runs that many copies of every prompt, which share its noise."""
        def repeat(tensor):
            return None if tensor is None else tensor.repeat_interleave(factor, dim=0)
        return NoiseBatch(repeat(self.seeds), repeat(self.repeats), repeat(self.prompt_lengths), self.left_padded)


class NoiseInjector:
    """Owns the hooked module, the reference norm and the sampler for one model."""

    def __init__(self, model: nn.Module, spec: NoiseSpec, tokenizer=None, max_length: int = 2048):
        dim = sites.hidden_size(model)
        self.spec = spec.validate_for_model(dim, sites.count_layers(sites.text_config(model)) or 0)
        self.model = model
        self.site = sites.SITES[self.spec.site].in_model(model, self.spec.layer)
        self.module = self.site.module
        self.reference_norm = self._reference_norm(tokenizer, max_length)
        self.per_reference = noise_per_reference(self.spec, dim)
        self.body = sites.body(model)
        device = sites.unwrap(model).get_input_embeddings().weight.device
        self.sampler = NoiseSampler(self.spec, self.reference_norm, dim, device)
        self.device = device
        if self.spec.active:
            dtype = _site_dtype(self.module)
            if dtype.is_floating_point:
                refuse_unrepresentable(self.spec, self.sampler.expected_norm, self.reference_norm,
                                       torch.finfo(dtype).max, str(dtype).removeprefix("torch."))
            warn_if_rounded_away(self.sampler.expected_norm, self.reference_norm, dim, dtype)

    def _reference_norm(self, tokenizer, max_length: int) -> float:
        if not self.site.calibrated:
            return self.site.weights_reference_norm()
        if tokenizer is None:
            raise InputError(f"hf-noise: noise_site={self.spec.site_name} needs a tokenizer to measure its reference "
                             "norm on the calibration text")
        return sites.layer_reference_norm(self.model, self.module, tokenizer, max_length)

    def record(self) -> dict:
        """Everything needed to rerun: settings, resolved site, reference and noise norms."""
        return noise_record(self.spec, self.reference_norm, self.sampler.dim)

    @contextmanager
    def attached(self, batch: NoiseBatch):
        """Add noise to every forward of `self.model` inside the block, for `batch`'s rows."""
        hook = _NoiseHook(self, batch)
        handles = [
            self.body.register_forward_pre_hook(hook.read_positions, with_kwargs=True),
            self.body.register_forward_hook(hook.forget_positions, always_call=True),
            self.module.register_forward_hook(hook),
        ]
        try:
            yield hook
            hook.close_block()
        finally:
            for handle in handles:
                handle.remove()


def _site_dtype(module: nn.Module) -> torch.dtype:
    floats = [p.dtype for p in module.parameters() if p.dtype.is_floating_point]
    return floats[0] if floats else torch.float32


def warn_if_rounded_away(noise_norm: float, reference_norm: float, dim: int, dtype: torch.dtype) -> None:
    """Warn when the noise per coordinate is below half a unit in the last place of a
    typical activation (its RMS coordinate, reference_norm / sqrt(d)) in `dtype`: then
    most of it is lost when the sum is rounded back to the model's precision."""
    if not dtype.is_floating_point or noise_norm <= 0 or reference_norm <= 0:
        return
    typical = reference_norm / math.sqrt(dim)
    half_ulp = torch.finfo(dtype).eps * 2.0 ** math.floor(math.log2(typical)) / 2
    per_coordinate = noise_norm / math.sqrt(dim)
    if per_coordinate >= half_ulp:
        return
    warnings.warn(
        f"hf-noise: in {str(dtype).removeprefix('torch.')} the noise ({per_coordinate:.3g} per coordinate, "
        f"{noise_norm / reference_norm:.2%} of the reference norm) is below half the rounding step of "
        f"typical activations ({half_ulp:.3g}): most of it is rounded away. Use a larger noise or "
        "dtype=float32.", UserWarning, stacklevel=3)


class _DecodeBlock:
    """The noise, times its multiplier and in the site's dtype, of positions
    `positions[b, k]` = first position of row b + k, for the decoding steps whose KV cache
    holds `start` + k tokens; and what each step served from it said about its positions."""

    def __init__(self, start: int, positions: torch.Tensor, noise: torch.Tensor):
        self.start, self.positions, self.noise = start, positions, noise
        self.claims: list[tuple[int, dict]] = []  # (k, the step's position arguments)

    def step_of(self, start: int, rows: int) -> int | None:
        k = start - self.start
        return k if 0 < k < self.positions.shape[1] and rows == self.positions.shape[0] else None

    def check(self) -> None:
        """Each served step's call against the block's positions: its position_ids, its
        cache_position, and its attention mask's column for the token (real, so that
        positions advance by one). One host sync per block."""
        if not self.claims:
            return
        steps = torch.tensor([k for k, _ in self.claims], device=self.positions.device)
        expected = self.positions.index_select(1, steps)
        wrong = []
        ids = [c.get("position_ids") for _, c in self.claims]
        if all(isinstance(i, torch.Tensor) for i in ids):
            if len({tuple(i.shape) for i in ids}) != 1 or ids[0].shape[1:] != (1,):
                raise PositionsUnknown("decoding steps passed position_ids of different shapes")
            said = torch.cat(ids, dim=1).to(expected.device, torch.int64)  # [1 or B, steps]: broadcasts
            wrong.append((said != expected).any())
        cache = [c.get("cache_position") for _, c in self.claims]
        if all(isinstance(i, torch.Tensor) for i in cache):
            wrong.append((torch.cat(cache).to(steps.device, torch.int64) != steps + self.start).any())
        mask = self.claims[-1][1].get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            if mask.shape[1] <= self.start + self.claims[-1][0]:
                raise PositionsUnknown("an attention mask does not cover the decoding steps")
            wrong.append((mask.to(steps.device).index_select(1, steps + self.start) <= 0).any())
        self.claims = []
        if wrong and bool(torch.stack(wrong).any()):
            raise PositionsUnknown("the decoding steps did not advance one position per row")


class _NoiseHook:
    def __init__(self, injector: NoiseInjector, batch: NoiseBatch):
        self.injector = injector
        self.sampler = injector.sampler
        self.spec = injector.spec
        self.batch = batch
        self._positions: torch.Tensor | None = None  # of the body's current forward
        self._expanded: NoiseBatch | None = None  # the batch for beams / return sequences
        self._block: _DecodeBlock | None = None
        self._step: int | None = None  # this forward's step in the block
        self._open_at: int | None = None  # this forward opens a block at this cache length
        # Its output: with noise_reference=prompt, each sample's reference norm (float32
        # [B]), measured on its prompt in the first call.
        self.prompt_references: torch.Tensor | None = None
        self._prompt_noise_norms: torch.Tensor | None = None  # their noise norms, computed once

    def read_positions(self, module, args, kwargs):
        # Read now, before the forward runs: its layers append to the KV cache.
        tokens = args[0] if args else kwargs.get("input_ids")
        if tokens is None:
            if self.injector.site.needs_input_ids:  # the site's module would not run: no noise at all
                raise InputError(f"hf-noise: noise_site={self.spec.site_name} needs input_ids; this call passes "
                                 "inputs_embeds")
            tokens = kwargs.get("inputs_embeds")
        rows, length = tokens.shape[:2]
        start = cache_length(kwargs) if length == 1 and _BLOCK and not args[1:] else None
        self._step = self._block.step_of(start, rows) if start is not None and self._block else None
        if self._step is not None:  # served by the block: nothing computed now
            self._block.claims.append((self._step, kwargs))
            return
        self.close_block()
        self._open_at = start
        self._positions, padding_visible = call_positions(args, kwargs, rows, length, tokens.device)
        if self.batch.left_padded and not padding_visible:
            raise PositionsUnknown(
                "the batch is left-padded but this call carries no 2-D attention mask to tell padding by "
                "(a static cache passes a 4-D one: use the default dynamic cache)"
            )

    def forget_positions(self, module, args, output):
        self._positions = self._step = self._open_at = None

    def close_block(self) -> None:
        if self._block is not None:
            block, self._block = self._block, None
            block.check()

    def __call__(self, module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if self._step is not None:
            noised = hidden + self._block.noise[:, self._step : self._step + 1]
        elif self._open_at is not None and self._opens_block(hidden):
            noised = hidden + self._block.noise[:, :1]
        else:
            noised = self._add_noise(hidden)
        return (noised, *output[1:]) if isinstance(output, tuple) else noised

    def _opens_block(self, hidden: torch.Tensor) -> bool:
        """Draw the block of the decoding steps from this one's positions on; False (this
        step drawn alone) where a row's token is padding or the reference is not known yet."""
        rows, _, dim = hidden.shape
        batch = self._batch_for(rows)
        first = self._positions_of(hidden)
        if (self.spec.reference == "prompt" and self.prompt_references is None) or bool((first < 0).any()):
            return False
        positions = first + torch.arange(_BLOCK, device=first.device)
        noise = torch.empty((rows, _BLOCK, dim), dtype=hidden.dtype, device=hidden.device)
        for chunk in draw_chunks(_BLOCK, rows * dim):
            chunk_positions = positions[:, chunk]
            drawn = self.sampler.sample(batch.seeds, batch.repeats, chunk_positions, self._norms_for(rows))
            noise[:, chunk] = (drawn * self._multiplier(batch, chunk_positions)[..., None]).to(hidden.dtype)
        self._block = _DecodeBlock(self._open_at, positions, noise)
        return True

    def _positions_of(self, hidden: torch.Tensor) -> torch.Tensor:
        rows, length = hidden.shape[:2]
        if self._positions is None:
            raise RuntimeError(
                f"hf-noise: the noise site ran outside a forward of {type(self.injector.body).__name__}, "
                "so its positions are unknown; call the model, not the site's module"
            )
        if tuple(self._positions.shape) != (rows, length):
            raise RuntimeError(
                f"hf-noise: the site's output has {rows} x {length} positions, but the model call "
                f"carries {tuple(self._positions.shape)}"
            )
        return self._positions.to(hidden.device)

    def _add_noise(self, hidden: torch.Tensor) -> torch.Tensor:
        rows, length, dim = hidden.shape
        batch = self._batch_for(rows)
        positions = self._positions_of(hidden)
        if self.spec.reference == "prompt" and self.prompt_references is None:
            # The site's clean output over each prompt, in the first call (which holds the whole prompt).
            references = self.injector.site.prompt_reference(hidden, positions, batch.prompt_lengths)
            if not bool(torch.isfinite(references).all()):
                raise RuntimeError("hf-noise: noise_reference=prompt needs the prompt in the first model call")
            self.prompt_references = references[:: rows // self.batch.seeds.shape[0]]
            self._prompt_noise_norms = self.prompt_references * self.injector.per_reference
        norms = self._norms_for(rows)
        out = hidden.clone()
        for chunk in draw_chunks(length, rows * dim):
            chunk_positions = positions[:, chunk]
            noise = self.sampler.sample(batch.seeds, batch.repeats, chunk_positions, norms)
            out[:, chunk] += (noise * self._multiplier(batch, chunk_positions)[..., None]).to(out.dtype)
        return out

    def _norms_for(self, rows: int) -> torch.Tensor | None:
        """noise_reference=prompt: each row's noise norm (beams and return sequences repeat
        each sample)."""
        if self._prompt_noise_norms is None:
            return None
        norms = self._prompt_noise_norms
        return norms.repeat_interleave(rows // norms.shape[0])

    def _batch_for(self, rows: int) -> NoiseBatch:
        size = self.batch.seeds.shape[0]
        if rows == size:
            return self.batch
        if rows % size:
            raise RuntimeError(f"hf-noise: the model was called with {rows} rows but the noise batch has {size}")
        if self._expanded is None or self._expanded.seeds.shape[0] != rows:
            self._expanded = self.batch.expanded(rows // size)
        return self._expanded

    def _multiplier(self, batch: NoiseBatch, positions: torch.Tensor) -> torch.Tensor:
        return position_multiplier(self.spec, positions, batch.prompt_lengths[:, None])


def position_multiplier(spec: NoiseSpec, positions: torch.Tensor, prompt_lengths: torch.Tensor) -> torch.Tensor:
    """Per position (prompt_lengths broadcast against positions): 0 where no noise goes
    (padding, position -1; the region `noise_positions` excludes), else the schedule's
    factor over generated positions. The vLLM worker uses it too."""
    generated_index = positions - prompt_lengths
    mask = positions >= 0
    if spec.positions == "prompt":
        mask &= generated_index < 0
    elif spec.positions == "generated":
        mask &= generated_index >= 0
    multiplier = mask.to(torch.float32)
    factor = spec.schedule.factor(generated_index)
    return multiplier if factor is None else multiplier * factor


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

    Positions are read from each forward call (pass the attention mask to the model as
    usual). `attention_mask` or `prompt_lengths` here tells where each row's prompt ends,
    for `noise_positions`, schedules and `noise_reference=prompt`. Reuse an `injector`
    across batches to measure the reference norm once. Decoding steps are checked
    against their block when it closes, at the latest when this block ends: a loop of
    one's own learns of a position mismatch only then.

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
