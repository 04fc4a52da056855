"""HFNoiseLM, registered as `hf-noise`: lm-eval's HFLM plus Gaussian noise.

How rows find their noise. Each request gets a sample seed from its content and
repeat index (seeding.py) when it enters `generate_until` / `loglikelihood` /
`loglikelihood_rolling`. HFLM then sorts and batches requests its own way; the seeds
follow the rows through two narrow points:
- generation: HFLM calls `tok_batch_encode(contexts)` right before `_model_generate`,
  so the batch's context strings pick up their seeds there (FIFO per string);
- scoring: `_model_call` gets a right-padded token tensor, and each row is matched to
  its registered input tokens (FIFO per token sequence).
Equal rows are interchangeable, and HFLM's sort is stable, so the assignment is the
same for any batch size or request order.
"""

from __future__ import annotations

import copy
import logging
import weakref
from collections import defaultdict, deque

import lm_eval.models  # noqa: F401  (register the built-in models before ours; see _autoregister)
from lm_eval import utils as lm_utils
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from . import __version__
from .noise import NoiseArgumentError, NoiseBatch, NoiseInjector, NoiseSpec
from .noise.rng import derive_seed
from .noise.sites import count_layers
from .noise.spec import QUANTIZATIONS
from .quantization import bitsandbytes_config
from .seeding import random_prefix, request_seeds

_log = logging.getLogger(__name__)
# Models alive in this process, by `pretrained`, so a reference scorer can reuse the
# weights instead of loading a second copy (outside its calls the model has no hooks).
_LIVE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def live_model(pretrained: str):
    """(model, tokenizer) of a live HFNoiseLM loaded from `pretrained`, or None."""
    lm = _LIVE.get(pretrained)
    return None if lm is None else (lm.model, lm.tokenizer)


@register_model("hf-noise")
class HFNoiseLM(HFLM):
    def __init__(self, pretrained, quantization: str = "none", random_prefix: int = 0, **kwargs):
        # Parse and validate everything we own before HFLM loads anything.
        self.noise_spec = NoiseSpec.from_model_args(kwargs)
        try:
            self.random_prefix = int(random_prefix)
        except (TypeError, ValueError):
            self.random_prefix = -1
        if self.random_prefix < 0:
            raise NoiseArgumentError("random_prefix", random_prefix, "an integer >= 0 (characters; 0 = off)")
        if quantization not in QUANTIZATIONS:
            raise NoiseArgumentError("quantization", quantization, ", ".join(QUANTIZATIONS))
        if quantization != "none" and not isinstance(pretrained, str):
            raise NoiseArgumentError(
                "quantization", quantization, "none when `pretrained` is an already-loaded model"
            )
        self.quantization = quantization
        if self.noise_spec.active:
            if kwargs.get("logits_cache"):
                _log.warning("hf-noise: logits_cache is turned off while noise is on")
            # Requests must never share a noisy forward pass.
            kwargs["logits_cache"] = False
        super().__init__(pretrained=pretrained, **kwargs)

        self.noise: NoiseInjector | None = None
        if self.noise_spec.active:
            if self.backend != "causal":
                raise NoiseArgumentError("backend", self.backend, "causal (hf-noise needs a decoder-only LM)")
            self.noise = NoiseInjector(
                self.model, self.noise_spec, tokenizer=self.tokenizer, max_length=self.max_length
            )
            _log.info(f"hf-noise: {self.noise.record()}")
        self._generation_rows: dict[str, deque] = {}
        self._generation_batch: list[tuple[int, int]] | None = None
        self._scoring_pending: deque = deque()
        self._scoring_rows: dict[tuple, deque] = {}
        self._calibrating = False
        if isinstance(pretrained, str):
            _LIVE[pretrained] = self

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
        noise = self.noise.record() if self.noise else self.noise_spec.to_record()
        info["noise"] = {
            "active": self.noise is not None,
            **noise,
            "quantization": self.quantization,
            "random_prefix": self.random_prefix,
            "lm_eval_noise_version": __version__,
        }
        return info

    # --- generation ----------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False):
        seeds = request_seeds(requests, self.noise_spec.seed, _generation_content)
        if self.random_prefix:
            requests = [_prefixed(request, random_prefix(seed, self.random_prefix))
                        for request, (seed, _) in zip(requests, seeds)]
        if self.noise is None:
            return super().generate_until(requests, disable_tqdm=disable_tqdm)
        rows: dict[str, deque] = defaultdict(deque)
        for request, row in zip(requests, seeds):
            rows[request.args[0]].append(row)
        self._generation_rows = rows
        try:
            return super().generate_until(requests, disable_tqdm=disable_tqdm)
        finally:
            self._generation_rows = {}

    def tok_batch_encode(self, strings, *args, **kwargs):
        if self._generation_rows:  # inside generate_until: this batch is about to be generated
            self._generation_batch = [self._take_generation_row(s) for s in strings]
        return super().tok_batch_encode(strings, *args, **kwargs)

    def _take_generation_row(self, context: str) -> tuple[int, int]:
        queue = self._generation_rows.get(context)
        if not queue:
            raise RuntimeError("hf-noise: a generation context arrived that no request registered")
        return queue.popleft()

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        if self.noise is None:
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        rows, self._generation_batch = self._generation_batch, None
        if rows is None or len(rows) != context.shape[0]:
            raise RuntimeError(
                "hf-noise: _model_generate was called without the seeds of its batch; "
                "generate through generate_until"
            )
        batch = NoiseBatch.build(
            [seed for seed, _ in rows],
            [repeat for _, repeat in rows],
            attention_mask=generation_kwargs.get("attention_mask"),
            device=self.noise.device,
        )
        with self.noise.attached(batch):
            return super()._model_generate(context, max_length, stop, **generation_kwargs)

    # --- scoring -------------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        if self.noise is None:
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        seeds = request_seeds(requests, self.noise_spec.seed, _loglikelihood_content)
        self._scoring_pending = deque((None, seed, repeat) for seed, repeat in seeds)
        try:
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        finally:
            self._scoring_pending = deque()

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        if self.noise is None:
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)
        seeds = request_seeds(requests, self.noise_spec.seed, _rolling_content)
        pending = deque()
        for request, (seed, repeat) in zip(requests, seeds):
            for index, window in enumerate(self._rolling_windows(request.args[0])):
                pending.append((window, derive_seed(seed, index), repeat))
        self._scoring_pending = pending
        try:
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)
        finally:
            self._scoring_pending = deque()

    def _rolling_windows(self, string: str):
        """The (context, continuation) token windows HFLM.loglikelihood_rolling makes."""
        return map(
            lm_utils.make_disjoint_window,
            lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(string),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            ),
        )

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        if self.noise is None:
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        rows = defaultdict(deque)
        for _, context, continuation in requests:
            seed, repeat = self._next_scoring_seed(context, continuation)
            # The model input HFLM builds, and how many of its positions are context.
            model_input = (context + continuation)[-(self.max_length + 1) :][:-1]
            prompt_length = max(0, len(model_input) - (len(continuation) - 1))
            rows[tuple(model_input)].append((seed, repeat, prompt_length))
        self._scoring_rows = rows
        try:
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        finally:
            self._scoring_rows = {}

    def _next_scoring_seed(self, context, continuation) -> tuple[int, int]:
        if not self._scoring_pending:
            if self.world_size > 1:  # HFLM pads ranks with copies of a window; discarded
                return 0, 0
            raise RuntimeError("hf-noise: a scoring request arrived without a seed")
        expected, seed, repeat = self._scoring_pending.popleft()
        if expected is not None and (list(expected[0]), list(expected[1])) != (
            list(context),
            list(continuation),
        ):
            raise RuntimeError(
                "hf-noise: lm-eval's rolling windows differ from the ones noise seeds were "
                "assigned to; this lm-eval version is not supported"
            )
        return seed, repeat

    def _detect_batch_size(self, *args, **kwargs):
        # Batch-size probing runs the model on dummy rows; give them dummy seeds so the
        # probe measures memory with the noise hook in place.
        self._calibrating = True
        try:
            return super()._detect_batch_size(*args, **kwargs)
        finally:
            self._calibrating = False

    def _model_call(self, inps, attn_mask=None, labels=None):
        if self.noise is None:
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        rows = [self._scoring_row(tokens) for tokens in inps.tolist()]
        seeds, repeats, prompt_lengths = zip(*rows)
        batch = NoiseBatch.build(
            seeds, repeats, prompt_lengths=prompt_lengths, device=self.noise.device
        )
        with self.noise.attached(batch):
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

    def _scoring_row(self, tokens: list[int]) -> tuple[int, int, int]:
        """(seed, repeat, prompt length) of one right-padded row (HFLM pads with 0)."""
        if self._calibrating:
            return 0, 0, len(tokens)
        trailing_zeros = len(tokens) - len(_rstrip_zeros(tokens))
        # Longest candidate first: HFLM sorts rows longest first, so a row that really
        # ends in token 0 is matched before a shorter one sharing its prefix.
        for length in range(len(tokens), len(tokens) - trailing_zeros - 1, -1):
            queue = self._scoring_rows.get(tuple(tokens[:length]))
            if queue:
                return queue.popleft()
        raise RuntimeError("hf-noise: a model input arrived that no request registered")


def _prefixed(request, prefix: str):
    """A copy of a generation request whose context starts with `prefix` (the repeats of
    a prompt are one Instance object, so it is never changed in place)."""
    clone = copy.copy(request)
    clone.arguments = (prefix + request.args[0], *request.args[1:])
    return clone


def _generation_content(request) -> tuple:
    return ("generate_until", request.args[0])


def _loglikelihood_content(request) -> tuple:
    return ("loglikelihood", *request.args)


def _rolling_content(request) -> tuple:
    return ("loglikelihood_rolling", request.args[0])


def _rstrip_zeros(tokens: list[int]) -> list[int]:
    end = len(tokens)
    while end and tokens[end - 1] == 0:
        end -= 1
    return tokens[:end]
