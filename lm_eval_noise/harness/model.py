"""HFNoiseLM, registered as `hf-noise`: lm-eval's HFLM plus Gaussian noise.

The noise of a row is a function of (noise_seed, its request's content, its repeat index,
the position): harness/requests.py gives each request its Sample (seed, repeat index,
prompt extent), the hooks (noise/hooks.py) take positions from each forward call. This
adapter only tells the hooks which sample each row of a batch carries. HFLM sorts and
batches requests its own way; the samples reach their rows by two routes:
- generation: each context string carries its sample (requests.CarriedContext) through
  HFLM's batching to `tok_batch_encode(contexts)`, which HFLM calls right before
  `_model_generate`;
- scoring: `_model_call` gets right-padded token rows, each looked up by its tokens
  (requests.ScoringSamples). For loglikelihood the seed comes from the context's tokens
  alone, so the choices of a question share one draw (a paired comparison), and
  requests with the same model input have the same noise: HFLM's logits cache stays on.
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict

import lm_eval.models  # noqa: F401  (register the built-in models before ours; see registration.py)
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from ..errors import InputError, require
from ..noise import NoiseArgumentError, NoiseBatch, NoiseInjector, NoiseSpec
from ..noise.sites import count_layers
from ..noise.spec import QUANTIZATIONS
from ..scoring.self_scoring import asks_for_self_scoring, score_doc_answers
from .progress import TokenCounter, token_progress
from .provenance import stack_versions
from .quantization import bitsandbytes_config, quantized_layer_count
from .requests import CarriedContext, Sample, ScoringSamples, generation_samples, random_prefix_length, with_arguments
from .seeding import repeat_indices

_log = logging.getLogger(__name__)
# Through stock lm_eval an input error ends in a traceback after lm_eval's own logs: it is
# also printed as one line first. `lm-eval-noise run` reports it itself and turns this off.
ANNOUNCE_INPUT_ERRORS = True


@register_model("hf-noise")
class HFNoiseLM(HFLM):
    """HFLM with noise. Private HFLM methods overridden, and why:
    - `_create_model`: check the layer and file shapes against the config, and add the
      quantization config, before the weights load;
    - `_model_call`, `_model_generate`: the model call, wrapped in the noise hooks (as
      lm-eval's hf_steered.py does);
    - `_loglikelihood_tokens`: the only place a scoring row's tokens meet its request;
    - `_detect_batch_size`: its probe rows belong to no request;
    - `_rank`, `_world_size` (attributes): set for data parallel on CPU (_shard_on_cpu).
    `generate_until` also scores the answers of docs that ask for the evaluated model as
    their reference (scoring.self_scoring.SELF_SCORING_KEY), so the task need not load the
    weights a second time.
    """

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        """As lm_eval's, but a key given both in --model_args and as one of lm_eval's own
        flags (--device, --batch_size) is an input error that says so, not a TypeError."""
        try:
            additional = {k: v for k, v in (additional_config or {}).items() if v is not None}
            both = sorted(set(arg_dict) & set(additional))
            if both:
                key = both[0]
                raise InputError(f"hf-noise: `{key}` is given twice, in --model_args ({arg_dict[key]!r}) and by "
                                 f"lm_eval's --{key} ({additional[key]!r}); pass it once, as --{key}")
            return cls(**arg_dict, **additional)
        except InputError as error:
            if ANNOUNCE_INPUT_ERRORS:
                print(f"{error}", file=sys.stderr, flush=True)
            raise

    def __init__(self, pretrained, quantization: str = "none", random_prefix: int = 0, **kwargs):
        # Parse and validate everything we own before HFLM loads anything.
        self.noise_spec = NoiseSpec.from_model_args(kwargs)
        if kwargs.get("gguf_file"):
            require("gguf", "gguf", "gguf_file")
            # The tokenizer is rebuilt from the file without a progress bar: say what the wait is.
            print(f"hf-noise: reading {kwargs['gguf_file']} (tokenizer and dequantised weights; about 20 s for "
                  "135M parameters on a CPU) ...", file=sys.stderr, flush=True)
        self.random_prefix = random_prefix_length(random_prefix, "hf-noise")
        if quantization not in QUANTIZATIONS:
            raise NoiseArgumentError("quantization", quantization, ", ".join(QUANTIZATIONS))
        if quantization != "none" and not isinstance(pretrained, str):
            raise NoiseArgumentError(
                "quantization", quantization, "none when `pretrained` is an already-loaded model"
            )
        self.quantization = quantization
        super().__init__(pretrained=pretrained, **kwargs)
        self.quantized_layers = quantized_layer_count(self.model, quantization) if quantization != "none" else 0
        self._shard_on_cpu()

        if self.backend != "causal" and self.noise_spec.active:
            raise NoiseArgumentError("backend", self.backend, "causal (hf-noise needs a decoder-only LM)")
        # Built even without noise, so every run records its site's reference norm.
        self.injector: NoiseInjector | None = None
        if self.backend == "causal":
            self.injector = NoiseInjector(
                self.model, self.noise_spec, tokenizer=self.tokenizer, max_length=self.max_length
            )
            _log.info(f"hf-noise: {self.injector.record()}")
        self.noise = self.injector if self.noise_spec.active else None
        self._generating = False
        self._generation_batch: list[Sample] | None = None
        # HFLM's model row for a scoring pair of n tokens: the last max_length + 1, less the last.
        self._scoring = ScoringSamples("hf-noise", self.noise_spec.seed,
                                       lambda n: (max(0, n - (self.max_length + 1)), n - 1))
        self._probing = False
        self._token_bar = None
        self._prompt_reference_norms: dict[str, float] = {}

    def _shard_on_cpu(self) -> None:
        """Data parallel on CPU. With N accelerate processes on the CPU (gloo), HFLM 0.4.13
        keeps the accelerator but shards requests only when it counts more than one GPU,
        so every process would run the whole evaluation. Set the rank and world size as
        it does for GPUs."""
        accelerator = getattr(self, "accelerator", None)
        if accelerator is None or accelerator.num_processes == 1 or self._world_size > 1:
            return
        if self.device.type == "cpu":
            self._rank = accelerator.process_index
            self._world_size = accelerator.num_processes

    # --- loading -------------------------------------------------------------------

    def _create_model(self, pretrained, quantization_config=None, dtype="auto", **kwargs):
        config = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
        hidden = getattr(config, "hidden_size", None)
        if hidden is not None:  # fail on a bad layer or file shape before the weights load
            self.noise_spec.validate_for_model(hidden, count_layers(config) or 0)
        if self.quantization != "none":
            if quantization_config is not None:
                raise NoiseArgumentError(
                    "quantization", self.quantization, "none for a checkpoint that is already quantized"
                )
            quantization_config = bitsandbytes_config(self.quantization, dtype)
        super()._create_model(
            pretrained, quantization_config=quantization_config, dtype=dtype, **kwargs
        )

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        noise = self.injector.record() if self.injector else self.noise_spec.to_record()
        info["noise"] = {
            "active": self.noise is not None,
            **noise,
            "quantization": self.quantization,
            "quantized_layers": self.quantized_layers,
            "random_prefix": self.random_prefix,
            "engine": "hf-noise",
            "versions": stack_versions(),
        }
        if self.noise_spec.reference == "prompt":
            info["noise"]["prompt_reference_norms"] = self._prompt_reference_norms
        return info

    # --- generation ----------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False):
        def generate(part):
            with token_progress(disabled=disable_tqdm or self.rank != 0) as self._token_bar:
                try:
                    return self._generate_until(part, disable_tqdm)
                finally:
                    self._token_bar = None

        return _without_rank_padding(requests, generate)

    def _generate_until(self, requests, disable_tqdm: bool):
        samples = generation_samples(requests, self.noise_spec.seed, self.random_prefix)
        if self.noise is None:
            requests = [request for request, _ in samples]
            return self._self_scored(requests, super().generate_until(requests, disable_tqdm=disable_tqdm))
        carried = [with_arguments(request, CarriedContext(request.args[0], sample)) for request, sample in samples]
        self._generating = True
        try:
            results = super().generate_until(carried, disable_tqdm=disable_tqdm)
        finally:
            self._generating = False
        self._gather_prompt_reference_norms()
        return self._self_scored(carried, results)

    def _self_scored(self, requests, answers: list[str]) -> list[str]:
        """The answers, with those whose doc asks the evaluated model to score them
        (scoring.self_scoring.SELF_SCORING_KEY) scored under this model's weights and
        carrying their score. Noise is off here: the hooks are attached only inside
        generation calls."""
        wanted = [i for i, request in enumerate(requests) if asks_for_self_scoring(request.doc)]
        if not wanted:
            return answers
        scored = score_doc_answers(self.model, self.tokenizer, [requests[i].doc for i in wanted],
                               [answers[i] for i in wanted])
        answers = list(answers)
        for i, answer in zip(wanted, scored):
            answers[i] = answer
        return answers

    def tok_batch_encode(self, strings, *args, **kwargs):
        if self._generating:  # inside generate_until: this batch is about to be generated
            if not all(isinstance(string, CarriedContext) for string in strings):
                raise RuntimeError("hf-noise: a generation context arrived without its sample (this lm-eval "
                                   "changed the context strings on their way to tok_batch_encode)")
            self._generation_batch = [string.sample for string in strings]
        return super().tok_batch_encode(strings, *args, **kwargs)

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        # transformers refuses a streamer with beam search; such runs keep HFLM's bar only.
        if self._token_bar is not None and generation_kwargs.get("num_beams", 1) == 1:
            generation_kwargs.setdefault("streamer", TokenCounter(self._token_bar))
        if self.noise is None:
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        samples, self._generation_batch = self._generation_batch, None
        if samples is None or len(samples) != context.shape[0]:
            raise RuntimeError(
                "hf-noise: _model_generate was called without the seeds of its batch; "
                "generate through generate_until"
            )
        batch = NoiseBatch.build(
            [sample.seed for sample in samples],
            [sample.repeat for sample in samples],
            attention_mask=generation_kwargs.get("attention_mask"),
            device=self.noise.device,
        )
        with self.noise.attached(batch) as hook:
            output = super()._model_generate(context, max_length, stop, **generation_kwargs)
        self._record_prompt_reference(batch, hook)
        return output

    def _record_prompt_reference(self, batch: NoiseBatch, hook) -> None:
        if hook.prompt_references is not None:  # noise_reference=prompt: each sample's own reference
            for seed, norm in zip(batch.seeds.tolist(), hook.prompt_references.tolist()):
                self._prompt_reference_norms[str(seed)] = norm

    def _gather_prompt_reference_norms(self) -> None:
        """Rank 0 writes the results JSON: give it every rank's per-sample norms."""
        if self.world_size > 1 and self.noise_spec.reference == "prompt":
            for part in self.gather_object(self._prompt_reference_norms) or []:
                self._prompt_reference_norms.update(part)

    # --- scoring -------------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        score = super().loglikelihood
        return _without_rank_padding(requests, lambda part: self._by_repeat(score, part, disable_tqdm))

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        score = super().loglikelihood_rolling
        return _without_rank_padding(requests, lambda part: self._by_repeat(score, part, disable_tqdm))

    def _by_repeat(self, score, requests, disable_tqdm: bool) -> list:
        if self.noise is None:
            return score(requests, disable_tqdm=disable_tqdm)
        results = self._scoring.by_repeat(requests, lambda part: score(part, disable_tqdm=disable_tqdm))
        self._gather_prompt_reference_norms()
        return results

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        score = super()._loglikelihood_tokens
        if self.noise is None:
            return score(requests, disable_tqdm, override_bs)
        return self._scoring.by_rows(requests, lambda part: score(part, disable_tqdm, override_bs))

    def _batch_scheduler(self, pos, n_reordered_requests):
        # HFLM computes pos // int(len(requests) / N) for batch_size=auto:N, a division by
        # zero for fewer than N requests; scoring in passes makes short calls common.
        if len(n_reordered_requests) < self.batch_schedule:
            return self._detect_batch_size(n_reordered_requests, pos)
        return super()._batch_scheduler(pos, n_reordered_requests)

    def set_cache_hook(self, cache_hook) -> None:
        # lm-eval's --use_cache keys answers by request text alone: under noise the
        # repeats of a prompt would share one answer, and runs with other noise settings
        # would be served this run's answers.
        if getattr(cache_hook, "dbdict", None) is not None and getattr(self, "noise", None) is not None:
            raise NoiseArgumentError(
                "--use_cache", "set", "off while noise is on (lm-eval's cache ignores repeats and noise settings)"
            )
        super().set_cache_hook(cache_hook)

    def _detect_batch_size(self, *args, **kwargs):
        # The probe runs the model on dummy rows; they get seed 0, so the probe measures
        # memory with the noise hook in place.
        self._probing = True
        try:
            return super()._detect_batch_size(*args, **kwargs)
        finally:
            self._probing = False

    def _model_call(self, inps, attn_mask=None, labels=None):
        if self.noise is None:
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        # The probe's rows belong to no request: seed 0, all prompt.
        rows = [Sample(0, 0, inps.shape[1]) if self._probing else self._scoring.of(tokens) for tokens in inps.tolist()]
        batch = NoiseBatch.build(
            [row.seed for row in rows],
            [row.repeat for row in rows],
            prompt_lengths=[row.prompt_length for row in rows],
            device=self.noise.device,
        )
        with self.noise.attached(batch) as hook:
            logits = super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        if not self._probing:
            self._record_prompt_reference(batch, hook)
        return logits


class _FirstAnswers(list):
    """A request's answers that keeps its first `limit`: lm-eval appends every answer of
    the request list to its request, rank padding included."""

    def __init__(self, limit: int, answers=()):
        super().__init__(answers)
        self.limit = limit

    def append(self, answer) -> None:
        if len(self) < self.limit:
            super().append(answer)


def _without_rank_padding(requests, answer) -> list:
    """`answer(requests)`, with lm-eval's data-parallel padding made harmless. lm-eval
    0.4.13 evens out ranks by request count, not document count: it sends a rank's last
    request again (`repeats` times per missing request) and appends those answers to that
    request's own, so its document got extra samples. Here the copies are answered with
    the request's own answers, not computed, and the request keeps only its first
    `repeats` answers."""
    occurrence = repeat_indices(requests)
    # Only a request that states its repeats (lm-eval's always do) can be padded past them.
    padding = {i for i, request in enumerate(requests)
               if isinstance(getattr(request, "repeats", None), int) and occurrence[i] >= request.repeats}
    if not padding:
        return answer(requests)
    real = [i for i in range(len(requests)) if i not in padding]
    results = [None] * len(requests)
    own: dict[int, list] = defaultdict(list)
    for index, result in zip(real, answer([requests[i] for i in real]), strict=True):
        results[index] = result
        own[id(requests[index])].append(result)
    for index in sorted(padding):
        request = requests[index]
        results[index] = own[id(request)][occurrence[index] % request.repeats]
        if not isinstance(request.resps, _FirstAnswers):
            request.resps = _FirstAnswers(request.repeats, request.resps)
    _log.warning(f"hf-noise: lm-eval padded this process with {len(padding)} copies of its last request to even "
                 "out the ranks; they are not computed and their answers are not added to that document")
    return results
