"""Inside vLLM's worker process: the noise hook of `vllm-noise` (harness/vllm_model.py).

vLLM runs every scheduled token of every request as one flat batch. The hook reads,
from the model runner's state for the current step, which request each token belongs
to (`input_batch.req_ids`, `query_start_loc`), its absolute position (`positions`) and
the request's sample seed and repeat index (carried in `SamplingParams.extra_args`
under EXTRA_ARGS_KEY), and adds the noise hf-noise would add at that (seed, position):
the same NoiseSampler, the same position mask and schedule. A request without the key
gets no noise. Installed through `LLM(worker_extension_cls=...)` and `collective_rpc`;
the layout read is that of vLLM's V1 model runner (GPU and CPU; vllm-noise switches the
V2 runner, vLLM 0.32's default on GPUs, off): another layout is an error, never a guess.
Under `noise_reference=prompt` each request's noise norm follows its prompt (_PromptNorms).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..noise import sites
from ..noise.hooks import position_multiplier
from ..noise.sampler import NoiseSampler, noise_per_reference
from ..noise.spec import NoiseSpec
from .requests import Sample

EXTRA_ARGS_KEY = "lm_eval_noise"  # a requests.Sample, as Sample.to_wire() writes it


class NoiseWorkerExtension:
    """Methods vLLM adds to its worker class; called by name through collective_rpc.
    Where the noise goes and how its reference is taken, the site objects say
    (noise.sites.SITES, built on vLLM's model)."""

    def _site(self, name: str, layer: int | None) -> sites.Site:
        return sites.SITES[name].in_vllm_model(self.model_runner.get_model(), layer)

    def lm_eval_noise_reference_norm(self, site: str, layer: int | None) -> float | None:
        """A site's reference norm from the weights (the embedding's: vLLM's forward
        returns whole vectors on every rank under tensor parallel); for a calibrated
        site, None: it is measured by a calibration request (`lm_eval_noise_measured`)."""
        found = self._site(site, layer)
        if found.calibrated:
            _NoiseState.of(self).measure = _Measure(found.module)
            return None
        return found.weights_reference_norm()

    def lm_eval_noise_site_differs(self, site: str, layer: int | None) -> str | None:
        """Why noise on this site of vLLM's model would not be hf-noise's, or None."""
        return self._site(site, layer).differs_in_vllm(self.model_runner.get_model())

    def lm_eval_noise_measured(self) -> float:
        measure = _NoiseState.of(self).measure
        measure.handle.remove()
        if measure.norm is None:
            raise RuntimeError("vllm-noise: the calibration request did not reach the layer")
        return measure.norm

    def lm_eval_noise_install(self, record: dict) -> int:
        """Attach the noise hook for `record` (noise.sampler.noise_record); returns the
        hidden size the worker sees."""
        runner = self.model_runner
        model = runner.get_model()
        spec = NoiseSpec.from_record(record)
        site = self._site(spec.site, spec.layer)
        dim = model.config.hidden_size
        device = next(model.parameters()).device
        sampler = NoiseSampler(spec, float(record["reference_norm"]), dim, device)
        state = _NoiseState.of(self)
        if state.handle is not None:
            state.handle.remove()
        state.hook = _NoiseHook(runner, spec, sampler, site)
        state.handle = site.module.register_forward_hook(state.hook)
        return dim

    def lm_eval_noise_prompt_norms(self) -> dict[str, float]:
        """noise_reference=prompt: {sample seed: its prompt's reference norm} of the
        generation requests served so far, as hf-noise records them."""
        hook = _NoiseState.of(self).hook
        return dict(hook.prompt_norms.recorded) if hook is not None and hook.prompt_norms is not None else {}


class _NoiseState:
    def __init__(self):
        self.handle = None
        self.hook = None
        self.measure = None

    @staticmethod
    def of(worker) -> _NoiseState:
        if not hasattr(worker, "_lm_eval_noise_state"):
            worker._lm_eval_noise_state = _NoiseState()
        return worker._lm_eval_noise_state


def _stream(output) -> torch.Tensor:
    """The residual stream a module hands on: vLLM's Llama-style layers return
    (hidden, residual) and add them in the next layer's norm; an embedding, a tensor."""
    if isinstance(output, tuple):
        return output[0] if output[1] is None else output[0] + output[1]
    return output


class _Measure:
    """hf-noise's calibrated reference (noise.sites.calibration_norm) on vLLM's stream."""

    def __init__(self, module):
        self.norm = None
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        if self.norm is None:
            self.norm = sites.calibration_norm(_stream(output)).item()


class _NoiseHook:
    def __init__(self, runner, spec: NoiseSpec, sampler: NoiseSampler, site: sites.Site):
        self.runner, self.spec, self.sampler = runner, spec, sampler
        # noise_reference=prompt: a request's noise norm, measured on its prompt's step
        self.prompt_norms = _PromptNorms(site, noise_per_reference(spec, sampler.dim)) \
            if spec.reference == "prompt" else None

    def __call__(self, module, inputs, output):
        stream = _stream(output)
        step = _Step.read(self.runner, stream.shape[0])
        if step is None:
            return None
        norms = self.prompt_norms.per_token(step, stream) if self.prompt_norms is not None else None
        noise = self.sampler.sample(step.seeds, step.repeats, step.positions[:, None], norms)
        out = stream.clone()
        # A token of a request without a seed counts as padding (position -1): no noise.
        positions = step.positions.masked_fill(step.prompt_lengths < 0, -1)
        multiplier = position_multiplier(self.spec, positions, step.prompt_lengths)
        out[: step.count] += (noise * multiplier[:, None, None])[:, 0].to(out.dtype)
        if not isinstance(output, tuple):
            return out
        # The whole stream in the first element and a zero residual: the next layer's
        # fused add-and-norm then sees exactly hf-noise's noisy stream.
        return (out, torch.zeros_like(output[1])) if output[1] is not None else (out, None)


class _Span(NamedTuple):
    """One request's scheduled tokens in a step."""

    req_id: str
    start: int
    end: int
    prompt_length: int  # -1: a request without noise
    seed: int
    generation: bool  # not a scoring request


class _Step:
    """One model call's scheduled tokens: per token its request's seed, repeat and prompt
    length and its absolute position; per request its span of tokens."""

    def __init__(self, seeds, repeats, positions, prompt_lengths, spans, held):
        self.seeds, self.repeats, self.positions, self.prompt_lengths = seeds, repeats, positions, prompt_lengths
        self.spans = spans
        self.count = spans[-1].end
        self.held = held  # the ids of every request the runner holds

    @staticmethod
    def read(runner, tokens: int) -> _Step | None:
        """None when no request of this step carries a seed."""
        try:
            req_ids = list(runner.input_batch.req_ids)
            starts = runner.query_start_loc.cpu[: len(req_ids) + 1].tolist()
            positions = runner.positions[: starts[-1]]
            requests = runner.requests
        except AttributeError as error:
            raise RuntimeError(f"vllm-noise: this vLLM's model runner has another layout ({error})") from None
        if starts[-1] > tokens:
            raise RuntimeError(f"vllm-noise: the site saw {tokens} tokens but the step schedules {starts[-1]}")
        seeds, repeats, lengths, spans = [], [], [], []
        for req_id, start, end in zip(req_ids, starts, starts[1:]):
            params = requests[req_id].sampling_params
            carried = (params.extra_args or {}).get(EXTRA_ARGS_KEY) if params is not None else None
            sample = Sample.from_wire(carried) if carried else Sample(0, 0, -1)  # -1: no noise
            # A scoring request says where its context ends (the rest is continuation, as
            # hf-noise counts it); a generation request's prompt is all it was given.
            generation = sample.prompt_length is None
            length = requests[req_id].num_prompt_tokens if generation else sample.prompt_length
            count = end - start
            seeds += [sample.seed] * count
            repeats += [sample.repeat] * count
            lengths += [length] * count
            spans.append(_Span(req_id, start, end, length, sample.seed, generation))
        if all(span.prompt_length < 0 for span in spans):
            return None
        device = positions.device
        return _Step(torch.tensor(seeds, dtype=torch.int64, device=device),
                     torch.tensor(repeats, dtype=torch.int64, device=device), positions.to(torch.int64),
                     torch.tensor(lengths, dtype=torch.int64, device=device), spans, requests)


class _PromptNorms:
    """noise_reference=prompt: hf-noise's per-sample reference (the site's
    `prompt_reference`) times the noise per unit of reference. hf-noise measures it on
    the call that holds the whole prompt; here the step that holds it (chunked prefill is
    off under this reference, and a prompt split across steps is an error), kept per
    request for its later steps."""

    def __init__(self, site: sites.Site, per_reference: float):
        self.site = site
        self.per_reference = per_reference
        self.norms: dict[str, torch.Tensor] = {}  # per request held by the runner: its noise norm
        self.recorded: dict[str, float] = {}  # per generation sample seed: its prompt's norm, for the record

    def per_token(self, step: _Step, stream: torch.Tensor) -> torch.Tensor:
        if len(self.norms) > len(step.held) + 64:  # forget finished and aborted requests
            self.norms = {req_id: norm for req_id, norm in self.norms.items() if req_id in step.held}
        per_token = torch.zeros(step.count, dtype=torch.float32, device=stream.device)
        for span in step.spans:
            if span.prompt_length >= 0:  # a request with noise
                if span.req_id not in self.norms:
                    self.norms[span.req_id] = self._measure(step, stream, span)
                per_token[span.start:span.end] = self.norms[span.req_id]
        return per_token

    def _measure(self, step: _Step, stream: torch.Tensor, span: _Span) -> torch.Tensor:
        positions, length = step.positions[span.start:span.end], span.prompt_length
        seen = int(((positions >= 0) & (positions < length)).sum())
        if length == 0 or seen != length:
            raise RuntimeError(f"vllm-noise: noise_reference=prompt needs each prompt whole in one step, but a "
                               f"prompt of {length} tokens came with {seen} of them")
        lengths = torch.tensor([length], device=positions.device)
        reference = self.site.prompt_reference(stream[span.start:span.end][None], positions[None], lengths)[0]
        if span.generation:
            self.recorded[str(span.seed)] = reference.item()
        return reference * self.per_reference
