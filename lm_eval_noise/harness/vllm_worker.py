"""Inside vLLM's worker process: the noise hook of `vllm-noise` (harness/vllm_model.py).

vLLM runs every scheduled token of every request as one flat batch. For each step the
hook reads, from the model runner's host-side state, which request each token belongs
to (`input_batch.req_ids`, `query_start_loc`) and the request's Sample (carried in
`SamplingParams.extra_args` under EXTRA_ARGS_KEY); the absolute positions come from the
runner's device buffer (`positions`). It adds the noise hf-noise would add at that
(seed, position): the same NoiseSampler, position mask and schedule, drawn in bounded
chunks. A request without the key gets no noise.

No host synchronisation per step: the per-token sample data is built on the host and
sent with one non-blocking copy from pinned memory into persistent device buffers
(StepSamples); under `noise_reference=prompt` the whole-prompt check is made on the
host and the measured norms stay on the device until the record asks for them.

Noise goes only into the model calls of real steps (`execute_model`, wrapped at
install): vLLM's dummy runs (profiling, warm-up, an idle data-parallel rank) get none.
Installed through `LLM(worker_extension_cls=...)` and `collective_rpc`; the layout read
is that of vLLM's V1 model runner (GPU and CPU; vllm-noise refuses the V2 runner):
another layout is an error, never a guess.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..noise import sites
from ..noise.hooks import position_multiplier
from ..noise.sampler import NoiseSampler, draw_chunks, noise_per_reference
from ..noise.spec import NoiseSpec
from .requests import Sample

EXTRA_ARGS_KEY = "lm_eval_noise"  # a requests.Sample, as Sample.to_wire() writes it
_NO_NOISE = Sample(0, 0, -1)  # a request without a sample: prompt length -1 masks every token


class NoiseWorkerExtension:
    """Methods vLLM adds to its worker class; called by name through collective_rpc.
    Where the noise goes and how its reference is taken, the site objects say
    (noise.sites.SITES, built on vLLM's model)."""

    def _site(self, name: str, layer: int | None) -> sites.Site:
        return sites.SITES[name].in_vllm_model(self.model_runner.get_model(), layer)

    def lm_eval_noise_uses_v2_runner(self) -> bool:
        """Whether this worker runs vLLM's V2 model runner, whose state the hook cannot read."""
        return bool(getattr(self, "use_v2_model_runner", False))

    def lm_eval_noise_reference_norm(self, site: str, layer: int | None) -> float | None:
        """A site's reference norm from the weights (the embedding's: vLLM's forward
        returns whole vectors on every rank under tensor parallel); for a calibrated
        site, None: it is measured by a calibration request (`lm_eval_noise_measured`)."""
        found = self._site(site, layer)
        if found.calibrated:
            state = _NoiseState.of(self)
            state.watch_steps(self.model_runner)
            state.measure = _Measure(found.module, self.model_runner, state)
            return None
        return found.weights_reference_norm()

    def lm_eval_noise_site_differs(self, site: str, layer: int | None) -> str | None:
        """Why noise on this site of vLLM's model would not be hf-noise's, or None."""
        return self._site(site, layer).differs_in_vllm(self.model_runner.get_model())

    def lm_eval_noise_measured(self, tokens: int) -> float:
        """The calibrated reference, from the `tokens` calibration tokens the request ran."""
        measure = _NoiseState.of(self).measure
        measure.handle.remove()
        return measure.norm(tokens)

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
        state.watch_steps(runner)
        if state.handle is not None:
            state.handle.remove()
        state.hook = _NoiseHook(runner, state, spec, sampler, site, device)
        state.handle = site.module.register_forward_hook(state.hook)
        return dim

    def lm_eval_noise_prompt_norms(self) -> dict[str, float]:
        """noise_reference=prompt: {sample seed: its prompt's reference norm} of the
        generation requests served so far, as hf-noise records them."""
        hook = _NoiseState.of(self).hook
        return hook.prompt_norms.recorded() if hook is not None and hook.prompt_norms is not None else {}


class _NoiseState:
    """The worker's noise state: the hook, the calibration, and whether a real step runs."""

    def __init__(self):
        self.handle = None
        self.hook = None
        self.measure = None
        self.in_step = False
        self._watched = None

    @staticmethod
    def of(worker) -> _NoiseState:
        if not hasattr(worker, "_lm_eval_noise_state"):
            worker._lm_eval_noise_state = _NoiseState()
        return worker._lm_eval_noise_state

    def watch_steps(self, runner) -> None:
        """Mark the model calls of real steps (inside the runner's execute_model) apart
        from those of its dummy runs (_dummy_run, also called inside execute_model when a
        data-parallel rank has nothing scheduled)."""
        if self._watched is runner:
            return
        runner.execute_model = self._marking(runner.execute_model, True)
        if hasattr(runner, "_dummy_run"):
            runner._dummy_run = self._marking(runner._dummy_run, False)
        self._watched = runner

    def _marking(self, method, in_step: bool):
        def marked(*args, **kwargs):
            outer, self.in_step = self.in_step, in_step
            try:
                return method(*args, **kwargs)
            finally:
                self.in_step = outer

        return marked


def _stream(output) -> torch.Tensor:
    """The residual stream a module hands on: vLLM's Llama-style layers return
    (hidden, residual) and add them in the next layer's norm; an embedding, a tensor."""
    if isinstance(output, tuple):
        return output[0] if output[1] is None else output[0] + output[1]
    return output


class _Span(NamedTuple):
    """One request's scheduled tokens in a step, as the host knows them."""

    req_id: str
    index: int  # the request's row in the runner's input batch
    start: int
    end: int
    sample: Sample  # its prompt_length: -1 for a request without noise
    generation: bool  # a generation request (not a scoring one)
    first_position: int  # the position of its first token in this step

    @property
    def prompt_length(self) -> int:
        return self.sample.prompt_length


class _Step:
    """One step's scheduled tokens, read from the runner's host-side state."""

    def __init__(self, runner):
        try:
            batch = runner.input_batch
            self.req_ids = list(batch.req_ids)
            starts = runner.query_start_loc.cpu[: len(self.req_ids) + 1].numpy()
            computed = batch.num_computed_tokens_cpu[: len(self.req_ids)]
            self.positions = runner.positions  # device buffer, filled for this step
            self.requests = runner.requests
        except AttributeError as error:
            raise RuntimeError(f"vllm-noise: this vLLM's model runner has another layout ({error})") from None
        self.starts = starts
        self.count = int(starts[-1])
        self.computed = computed

    def spans(self, sample_of) -> list[_Span]:
        """Per request: `sample_of(req_id, request)` gives (its sample, whether it generates)."""
        return [_Span(req_id, index, int(self.starts[index]), int(self.starts[index + 1]),
                      *sample_of(req_id, self.requests[req_id]), int(self.computed[index]))
                for index, req_id in enumerate(self.req_ids)]


class StepSamples:
    """Per-token sample data of a step in persistent buffers: rows seed, repeat index,
    prompt length (-1: no noise) and the token's request row. Filled on the host, sent
    to the device with one non-blocking copy from pinned memory; two host buffers take
    turns, and one is refilled only once its last copy is done (an event), so a step
    never waits for the device unless it runs two steps ahead. Each buffer is flat and a
    step uses its first ROWS x tokens elements: a contiguous block (a strided copy would
    go through an unpinned staging copy, which waits)."""

    ROWS = 4

    def __init__(self, capacity: int, device: torch.device):
        self.device = device
        self.on_host = device.type == "cpu"
        pinned = not self.on_host and torch.cuda.is_available()
        size = self.ROWS * capacity
        self.host = [torch.zeros(size, dtype=torch.int64, pin_memory=pinned) for _ in range(1 if self.on_host else 2)]
        self.buffer = self.host[0] if self.on_host else torch.zeros(size, dtype=torch.int64, device=device)
        self.events: list = [None] * len(self.host)
        self.turn = 0

    def fill(self, spans: list[_Span], tokens: int) -> torch.Tensor:
        """The [ROWS, tokens] device view for a step of `tokens` model rows (padding
        rows past the last span get no noise)."""
        if self.ROWS * tokens > self.buffer.numel():
            self._grow(tokens)
        used = self.ROWS * tokens
        host = self.host[self.turn][:used]
        if self.events[self.turn] is not None:
            self.events[self.turn].synchronize()  # its previous copy is done (long since, but for a lag of 2 steps)
        rows = host.view(self.ROWS, tokens).numpy()
        rows.fill(0)
        rows[2].fill(-1)
        for span in spans:
            rows[0, span.start:span.end] = span.sample.seed
            rows[1, span.start:span.end] = span.sample.repeat
            rows[2, span.start:span.end] = span.prompt_length
            rows[3, span.start:span.end] = span.index
        if self.on_host:
            return host.view(self.ROWS, tokens)
        view = self.buffer[:used]
        view.copy_(host, non_blocking=True)
        event = torch.cuda.Event() if self.device.type == "cuda" else None
        if event is not None:
            event.record()
        self.events[self.turn] = event
        self.turn = (self.turn + 1) % len(self.host)
        return view.view(self.ROWS, tokens)

    def _grow(self, tokens: int) -> None:
        fresh = StepSamples(tokens, self.device)
        self.host, self.buffer, self.events, self.turn = fresh.host, fresh.buffer, fresh.events, 0


class _Measure:
    """hf-noise's calibrated reference (noise.sites.calibration_norm) on vLLM's stream:
    the calibration request's site outputs of every step it runs in (chunked prefill
    may split it), put back in position order."""

    def __init__(self, module, runner, state: _NoiseState):
        self.runner, self.state = runner, state
        self.rows: list[torch.Tensor] = []
        self.positions: list[torch.Tensor] = []
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        if not self.state.in_step:
            return
        step = _Step(self.runner)
        self.rows.append(_stream(output)[: step.count].detach().float().clone())
        self.positions.append(step.positions[: step.count].clone())

    def norm(self, tokens: int) -> float:
        if not self.rows:
            raise RuntimeError("vllm-noise: the calibration request did not reach the layer")
        positions = torch.cat(self.positions)
        in_prompt = positions < tokens  # a decoding step after the prompt, if any, does not count
        rows, positions = torch.cat(self.rows)[in_prompt], positions[in_prompt]
        order = torch.argsort(positions)
        if not torch.equal(positions[order].cpu(), torch.arange(tokens)):
            raise RuntimeError(f"vllm-noise: the calibration request's {tokens} tokens did not each reach the layer "
                               "once")
        return sites.calibration_norm(rows[order]).item()


class _NoiseHook:
    def __init__(self, runner, state: _NoiseState, spec: NoiseSpec, sampler: NoiseSampler, site: sites.Site,
                 device: torch.device):
        self.runner, self.state, self.spec, self.sampler = runner, state, spec, sampler
        self.buffers = StepSamples(getattr(runner, "max_num_tokens", 8192), device)
        self.samples: dict[str, tuple[Sample, bool]] = {}  # per request held by the runner
        # noise_reference=prompt: a request's noise norm, measured on its prompt's step
        self.prompt_norms = _PromptNorms(site, noise_per_reference(spec, sampler.dim)) \
            if spec.reference == "prompt" else None

    def __call__(self, module, inputs, output):
        if not self.state.in_step:  # a dummy run: no request's tokens
            return None
        stream = _stream(output)
        step = _Step(self.runner)
        if step.count > stream.shape[0]:
            raise RuntimeError(f"vllm-noise: the site saw {stream.shape[0]} tokens but the step schedules "
                               f"{step.count}")
        spans = step.spans(self._sample_of)
        if all(span.prompt_length < 0 for span in spans):
            return None
        rows = self.buffers.fill(spans, step.count)
        seeds, repeats, prompt_lengths, requests = rows
        positions = step.positions[: step.count].to(torch.int64)
        per_request = None if self.prompt_norms is None else \
            self.prompt_norms.per_request(spans, stream, positions, self.runner.requests)
        out = stream.clone()
        for chunk in draw_chunks(step.count, self.sampler.dim):
            norms = None if per_request is None else per_request[requests[chunk]]
            noise = self.sampler.sample(seeds[chunk], repeats[chunk], positions[chunk, None], norms)
            # A token of a request without a sample counts as padding (position -1): no noise.
            masked = positions[chunk].masked_fill(prompt_lengths[chunk] < 0, -1)
            multiplier = position_multiplier(self.spec, masked, prompt_lengths[chunk])
            out[chunk] += (noise * multiplier[:, None, None])[:, 0].to(out.dtype)
        if not isinstance(output, tuple):
            return out
        # The whole stream in the first element and a zero residual: the next layer's
        # fused add-and-norm then sees exactly hf-noise's noisy stream.
        return (out, torch.zeros_like(output[1])) if output[1] is not None else (out, None)

    def _sample_of(self, req_id: str, request) -> tuple[Sample, bool]:
        """A request's sample with its prompt length, and whether it is a generation
        request; read once per request."""
        known = self.samples.get(req_id)
        if known is not None:
            return known
        self.samples = _held_only(self.samples, self.runner.requests)
        params = request.sampling_params
        carried = (params.extra_args or {}).get(EXTRA_ARGS_KEY) if params is not None else None
        sample = Sample.from_wire(carried) if carried else _NO_NOISE
        # A generation request's prompt is all it was given; a scoring request says where
        # its context ends (the rest is continuation, as hf-noise counts it).
        generation = bool(carried) and sample.prompt_length is None
        if generation:
            sample = Sample(sample.seed, sample.repeat, request.num_prompt_tokens)
        self.samples[req_id] = (sample, generation)
        return self.samples[req_id]


def _held_only(cache: dict, held) -> dict:
    """`cache` (per request id), without the requests the runner no longer holds once
    more than 64 of them have gone (finished, aborted)."""
    if len(cache) <= len(held) + 64:
        return cache
    return {key: value for key, value in cache.items() if key in held}


class _PromptNorms:
    """noise_reference=prompt: hf-noise's per-sample reference (the site's
    `prompt_reference`) times the noise per unit of reference. hf-noise measures it on
    the call that holds the whole prompt; here the step that holds it (chunked prefill is
    off under this reference, and a prompt split across steps is an error), kept per
    request for its later steps. The whole-prompt check uses the host's counts; the
    device's positions are checked against them without a sync, when the record is read."""

    def __init__(self, site: sites.Site, per_reference: float):
        self.site = site
        self.per_reference = per_reference
        self.noise_norms: dict[str, torch.Tensor] = {}  # per request held by the runner: its noise norm
        self.kept: dict[int, torch.Tensor] = {}  # per generation sample seed: its reference, for the record
        self.misplaced: torch.Tensor | None = None  # device flag: a measured prompt did not start at position 0

    def per_request(self, spans: list[_Span], stream: torch.Tensor, positions: torch.Tensor, held) -> torch.Tensor:
        """Each request row's noise norm, float32 [rows] on the device (0 without noise);
        `held`: the ids of every request the runner holds."""
        self.noise_norms = _held_only(self.noise_norms, held)
        norms = []
        for span in spans:
            if span.prompt_length < 0:
                norms.append(stream.new_zeros((), dtype=torch.float32))
                continue
            if span.req_id not in self.noise_norms:
                self.noise_norms[span.req_id] = self._measure(span, stream, positions) * self.per_reference
            norms.append(self.noise_norms[span.req_id])
        return torch.stack(norms)

    def _measure(self, span: _Span, stream: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        length, count = span.prompt_length, span.end - span.start
        if length == 0 or span.first_position != 0 or count < length:
            seen = max(0, min(count, length - span.first_position))
            raise RuntimeError(f"vllm-noise: noise_reference=prompt needs each prompt whole in one step, but a "
                               f"prompt of {length} tokens came with {seen} of them")
        span_positions = positions[span.start:span.end]
        misplaced = span_positions[0] != 0
        self.misplaced = misplaced if self.misplaced is None else self.misplaced | misplaced
        lengths = torch.full((1,), length, dtype=torch.int64, device=positions.device)  # a fill, not a copy
        reference = self.site.prompt_reference(stream[span.start:span.end][None], span_positions[None], lengths)[0]
        if span.generation:
            self.kept[span.sample.seed] = reference
        return reference

    def recorded(self) -> dict[str, float]:
        """{sample seed: its prompt's reference norm}; an error if the device's positions
        disagreed with the host's counts (one sync, here, not per step)."""
        if self.misplaced is not None and bool(self.misplaced):
            raise RuntimeError("vllm-noise: a prompt measured for noise_reference=prompt did not start at "
                               "position 0 on the device, though the host counted it so")
        return {str(seed): norm.item() for seed, norm in self.kept.items()}
