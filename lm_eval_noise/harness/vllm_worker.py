"""Inside vLLM's worker process: the noise hook of `vllm-noise` (harness/vllm_model.py).

vLLM runs every scheduled token of every request as one flat batch. The hook reads,
from the model runner's state for the current step, which request each token belongs
to (`input_batch.req_ids`, `query_start_loc`), its absolute position (`positions`) and
the request's sample seed and repeat index (carried in `SamplingParams.extra_args`
under EXTRA_ARGS_KEY), and adds the noise hf-noise would add at that (seed, position):
the same NoiseSampler, the same position mask and schedule. A request without the key
gets no noise. Installed through `LLM(worker_extension_cls=...)` and `collective_rpc`;
the layout read is that of vLLM's v1 model runner (GPU and CPU): another layout is an
error, never a guess.
"""

from __future__ import annotations

import torch

from ..noise import sites
from ..noise.hooks import position_multiplier
from ..noise.sampler import NoiseSampler
from ..noise.spec import NoiseSpec

EXTRA_ARGS_KEY = "lm_eval_noise"  # {"seed": int, "repeat": int, "prompt_length": int (scoring)}


class NoiseWorkerExtension:
    """Methods vLLM adds to its worker class; called by name through collective_rpc."""

    def lm_eval_noise_reference_norm(self, site: str, layer: int | None) -> float | None:
        """The embedding's reference norm (hf-noise's rule: mean L2 norm over the
        vocabulary); for a layer, None: it is measured by a calibration request."""
        model = self.model_runner.get_model()
        if site == "embed":
            return sites.embedding_reference_norm(_EmbeddingView(_embedding(model), model.config))
        _NoiseState.of(self).measure = _Measure(_layers(model)[layer])
        return None

    def lm_eval_noise_measured(self) -> float:
        measure = _NoiseState.of(self).measure
        measure.handle.remove()
        if measure.norm is None:
            raise RuntimeError("vllm-noise: the calibration request did not reach the layer")
        return measure.norm

    def lm_eval_noise_install(self, record: dict) -> int:
        """Attach the noise hook for `record` (NoiseSpec.to_record() plus reference_norm and
        hidden_size); returns the hidden size the worker sees."""
        runner = self.model_runner
        model = runner.get_model()
        spec = NoiseSpec.from_record(record)
        module = _embedding(model) if spec.site == "embed" else _layers(model)[spec.layer]
        dim = model.config.hidden_size
        device = next(model.parameters()).device
        sampler = NoiseSampler(spec, float(record["reference_norm"]), dim, device)
        state = _NoiseState.of(self)
        if state.handle is not None:
            state.handle.remove()
        state.handle = module.register_forward_hook(_NoiseHook(runner, spec, sampler, spec.site == "layer"))
        return dim


class _NoiseState:
    def __init__(self):
        self.handle = None
        self.measure = None

    @staticmethod
    def of(worker) -> _NoiseState:
        if not hasattr(worker, "_lm_eval_noise_state"):
            worker._lm_eval_noise_state = _NoiseState()
        return worker._lm_eval_noise_state


class _EmbeddingView(torch.nn.Module):
    """An HF-like view of vLLM's embedding for sites.embedding_reference_norm: the real
    vocabulary only (vLLM pads its table)."""

    def __init__(self, embedding, config):
        super().__init__()
        self.embedding = embedding
        self.config = config
        self.weight = embedding.weight[: config.vocab_size]

    def get_input_embeddings(self):
        return self

    def forward(self, ids):
        return self.embedding(ids)


def _embedding(model) -> torch.nn.Module:
    embedding = getattr(getattr(model, "model", None), "embed_tokens", None)
    if embedding is None:
        raise RuntimeError(f"vllm-noise: cannot find the input embedding of {type(model).__name__}")
    return embedding


def _layers(model) -> torch.nn.ModuleList:
    return sites.decoder_layers(model)


def _stream(output) -> torch.Tensor:
    """The residual stream a decoder layer hands on: vLLM's Llama-style layers return
    (hidden, residual) and add them in the next layer's norm."""
    if isinstance(output, tuple):
        return output[0] if output[1] is None else output[0] + output[1]
    return output


class _Measure:
    """hf-noise's layer reference: mean L2 norm of the layer's output over the
    calibration text, the first position dropped."""

    def __init__(self, layer):
        self.norm = None
        self.handle = layer.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        if self.norm is None:
            self.norm = _stream(output)[1:].float().norm(dim=-1).mean().item()


class _NoiseHook:
    def __init__(self, runner, spec: NoiseSpec, sampler: NoiseSampler, layer_site: bool):
        self.runner, self.spec, self.sampler, self.layer_site = runner, spec, sampler, layer_site

    def __call__(self, module, inputs, output):
        stream = _stream(output) if self.layer_site else output
        rows = self._rows(stream.shape[0])
        if rows is None:
            return None
        seeds, repeats, positions, prompt_lengths, count = rows
        noise = self.sampler.sample(seeds, repeats, positions[:, None])
        out = stream.clone()
        # A token of a request without a seed counts as padding (position -1): no noise.
        positions = positions.masked_fill(prompt_lengths < 0, -1)
        multiplier = position_multiplier(self.spec, positions, prompt_lengths)
        out[:count] += (noise * multiplier[:, None, None])[:, 0].to(out.dtype)
        if not self.layer_site:
            return out
        # The whole stream in the first element and a zero residual: the next layer's
        # fused add-and-norm then sees exactly hf-noise's noisy stream.
        return (out, torch.zeros_like(output[1])) if output[1] is not None else (out, None)

    def _rows(self, tokens: int):
        """Per scheduled token: seed, repeat, position, its request's prompt length; None
        when no request of this step carries a seed."""
        runner = self.runner
        try:
            req_ids = list(runner.input_batch.req_ids)
            starts = runner.query_start_loc.cpu[: len(req_ids) + 1].tolist()
            positions = runner.positions[: starts[-1]]
            requests = runner.requests
        except AttributeError as error:
            raise RuntimeError(f"vllm-noise: this vLLM's model runner has another layout ({error})") from None
        if starts[-1] > tokens:
            raise RuntimeError(f"vllm-noise: the site saw {tokens} tokens but the step schedules {starts[-1]}")
        seeds, repeats, lengths, noisy = [], [], [], False
        for req_id, start, end in zip(req_ids, starts, starts[1:]):
            params = requests[req_id].sampling_params
            carried = (params.extra_args or {}).get(EXTRA_ARGS_KEY) if params is not None else None
            noisy = noisy or carried is not None
            seed, repeat = (carried["seed"], carried["repeat"]) if carried else (0, 0)
            count = end - start
            seeds += [seed] * count
            repeats += [repeat] * count
            # A scoring request says where its context ends (the rest is continuation, as
            # hf-noise counts it); a request without a seed gets -1: no noise (below).
            length = carried.get("prompt_length", requests[req_id].num_prompt_tokens) if carried else -1
            lengths += [length] * count
        if not noisy:
            return None
        device = positions.device
        return (torch.tensor(seeds, dtype=torch.int64, device=device),
                torch.tensor(repeats, dtype=torch.int64, device=device),
                positions.to(torch.int64), torch.tensor(lengths, dtype=torch.int64, device=device), starts[-1])
