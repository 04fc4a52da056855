"""Where noise goes: finding the hooked module and measuring its reference norm.

Reference norms (the unit of `sigma_scale`):
- embed: mean L2 norm of the input-embedding module's output rows over the whole
  vocabulary. That is the tensor the hook changes, so a model that scales embeddings
  inside the module (Gemma 3's scaled embedding) is measured after its scale; a model
  that scales after the module (Gemma 1/2 multiply by sqrt(d) in the model body)
  scales the noise by the same factor, so the noise-to-embedding ratio still holds.
- layer:L: mean L2 norm of decoder block L's output (the residual stream) over a fixed
  built-in calibration text, first position excluded (it is an outlier in most LMs).
"""

from __future__ import annotations

import torch
from torch import nn

CALIBRATION_TEXT = (
    "The history of science is full of small observations that changed how people "
    "understood the world. A farmer notices that one field yields more grain than "
    "another, a sailor records the stars on a clear night, and a child asks why the "
    "sky is blue. Careful measurement, honest reporting and patient repetition turn "
    "such questions into knowledge.\n\n"
    "def mean(values):\n"
    '    """Return the arithmetic mean of a non-empty list of numbers."""\n'
    "    total = 0.0\n"
    "    for value in values:\n"
    "        total += value\n"
    "    return total / len(values)\n\n"
    "Q: What is the capital of France?\nA: Paris is the capital and largest city of France."
)
_CALIBRATION_MAX_TOKENS = 256
_VOCAB_CHUNK = 8192


def unwrap(model: nn.Module) -> nn.Module:
    """The underlying transformers model of a PEFT wrapper, else the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def body(model: nn.Module) -> nn.Module:
    """The module that runs the embedding and the decoder stack, whose forward receives
    the attention mask and the KV cache: the deepest module holding both (LlamaModel in
    LlamaForCausalLM; OPTDecoder in OPTForCausalLM, whose head calls it directly)."""
    base = unwrap(model)
    embedding = base.get_input_embeddings()
    try:
        layers = decoder_layers(model)
    except ValueError:  # no recognisable stack: the transformers base model
        inner = getattr(base, "base_model", base)
        return inner if isinstance(inner, nn.Module) else base
    holder = base
    while True:
        deeper = next((child for child in holder.children()
                       if _holds(child, embedding) and _holds(child, layers)), None)
        if deeper is None:
            return holder
        holder = deeper


def _holds(module: nn.Module, part: nn.Module) -> bool:
    return any(sub is part for sub in module.modules())


def text_config(model: nn.Module):
    config = unwrap(model).config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def hidden_size(model: nn.Module) -> int:
    return unwrap(model).get_input_embeddings().embedding_dim


def count_layers(config) -> int | None:
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder blocks: the shallowest ModuleList of num_hidden_layers."""
    base = unwrap(model)
    expected = count_layers(text_config(model))
    lists = [m for m in base.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    for module_list in lists:  # modules() is pre-order, so shallower lists come first
        if expected is None or len(module_list) == expected:
            return module_list
    raise ValueError(
        f"hf-noise: could not find the decoder layers of {type(base).__name__} "
        f"(no ModuleList of {expected} blocks); use noise_site=embed"
    )


def embedding_reference_norm(model: nn.Module) -> float:
    embedding = unwrap(model).get_input_embeddings()
    return vocabulary_mean_norm(embedding, embedding.weight.shape[0], embedding.weight.device)


def vocabulary_mean_norm(embedding: nn.Module, vocab: int, device) -> float:
    """The mean L2 norm of embedding(i) over the ids 0..vocab-1 (through the module, so
    any scale it applies counts; vLLM's worker calls it on its own embedding)."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, vocab, _VOCAB_CHUNK):
            ids = torch.arange(start, min(start + _VOCAB_CHUNK, vocab), device=device)
            total += embedding(ids).float().norm(dim=-1).sum().item()
    return total / vocab


def calibration_ids(tokenizer, max_length: int) -> list[int]:
    """The tokens a layer's reference norm is measured on, for every engine: the first
    min(256, max_length) tokens of the built-in calibration text."""
    return list(tokenizer(CALIBRATION_TEXT)["input_ids"][: min(_CALIBRATION_MAX_TOKENS, max_length)])


def calibration_norm(stream: torch.Tensor) -> torch.Tensor:
    """A layer's reference norm from its output over the calibration tokens [T, d]: the
    mean L2 norm, the first position dropped (an outlier in most LMs). A 0-d tensor."""
    return stream.detach()[1:].float().norm(dim=-1).mean()


def layer_reference_norm(model: nn.Module, layer: nn.Module, tokenizer, max_length: int) -> float:
    return layer_reference_norms(model, [layer], tokenizer, max_length)[0]


def layer_reference_norms(model: nn.Module, layers, tokenizer, max_length: int) -> list[float]:
    """The reference norm of each of `layers`, from one forward over the calibration text."""
    ids = torch.tensor([calibration_ids(tokenizer, max_length)])
    if ids.shape[1] < 2:
        raise ValueError("the calibration text is too short for this tokenizer")
    device = unwrap(model).get_input_embeddings().weight.device
    norms: dict[int, float] = {}

    def capture(index):
        def hook(module, inputs, output):
            norms[index] = calibration_norm((output[0] if isinstance(output, tuple) else output)[0]).item()
        return hook

    handles = [layer.register_forward_hook(capture(i)) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            model(input_ids=ids.to(device))
    finally:
        for handle in handles:
            handle.remove()
    return [norms[i] for i in range(len(layers))]


def reference_norms(model: nn.Module, tokenizer, max_length: int = 2048) -> dict[str, float]:
    """{site: reference norm} for `embed` and every `layer:L`: the unit of sigma_scale at
    each site, and the scale against which to choose an absolute noise_norm."""
    layers = decoder_layers(model)
    norms = {"embed": embedding_reference_norm(model)}
    for index, norm in enumerate(layer_reference_norms(model, layers, tokenizer, max_length)):
        norms[f"layer:{index}"] = norm
    return norms


# ---------------------------------------------------------------- the sites themselves
# A site: the module whose output gets the noise, how its reference norm (the unit of
# sigma_scale) is taken, and which prompt positions a per-prompt reference
# (noise_reference=prompt) averages over. Every engine asks these objects: hf-noise
# builds them on a transformers model (`in_model`), vllm-noise's worker on vLLM's
# (`in_vllm_model`). Adding a site (attention or MLP output, say) is one class in SITES.


class Site:
    needs_input_ids = False  # True: the module does not run on a call that passes inputs_embeds
    calibrated = False  # True: the reference norm is measured on the calibration text, not the weights

    def __init__(self, module: nn.Module):
        self.module = module

    def weights_reference_norm(self) -> float:
        """The reference norm of a site that is not `calibrated`."""
        raise NotImplementedError

    def differs_in_vllm(self, model: nn.Module) -> str | None:
        """Why noise on this site of a vLLM model would not be hf-noise's (completing
        "<model type> in vLLM ..."), or None."""
        return None

    @staticmethod
    def prompt_positions(in_prompt: torch.Tensor, positions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return in_prompt

    def prompt_reference(self, hidden: torch.Tensor, positions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """noise_reference=prompt: per row of the site's clean output [B, T, d], the mean
        L2 norm over the row's prompt positions (absolute `positions` [B, T], prompt
        `lengths` [B]); float32 [B]. The caller gives a call that holds each whole prompt;
        a row without a prompt position gets NaN (no host sync here to refuse it)."""
        in_prompt = (positions >= 0) & (positions < lengths[:, None])
        counted = self.prompt_positions(in_prompt, positions, lengths)
        norms = hidden.detach().float().norm(dim=-1) * counted
        return norms.sum(dim=1) / counted.sum(dim=1)


class EmbeddingSite(Site):
    """The input embedding's output: the token vectors (after any scale the module applies)."""

    needs_input_ids = True

    def __init__(self, module: nn.Module, vocab_size: int):
        super().__init__(module)
        self.vocab_size = vocab_size

    @classmethod
    def in_model(cls, model: nn.Module, layer: int | None = None) -> EmbeddingSite:
        embedding = unwrap(model).get_input_embeddings()
        return cls(embedding, embedding.weight.shape[0])

    @classmethod
    def in_vllm_model(cls, model: nn.Module, layer: int | None = None) -> EmbeddingSite:
        embedding = getattr(getattr(model, "model", None), "embed_tokens", None)
        if embedding is None:
            raise RuntimeError(f"vllm-noise: cannot find the input embedding of {type(model).__name__}")
        return cls(embedding, model.config.vocab_size)  # vLLM pads its table: the config's count

    def weights_reference_norm(self) -> float:
        return vocabulary_mean_norm(self.module, self.vocab_size, next(self.module.parameters()).device)

    def differs_in_vllm(self, model: nn.Module) -> str | None:
        """vLLM's model may scale the token embeddings after this module (Gemma's sqrt(d)
        normalizer, which transformers applies inside it): noise on the module would come
        before the scale."""
        inner = getattr(model, "model", None)
        if not hasattr(inner, "embed_input_ids"):
            return None
        ids = torch.arange(min(64, self.vocab_size), device=next(self.module.parameters()).device)
        with torch.no_grad():
            if torch.equal(inner.embed_input_ids(ids), self.module(ids)):
                return None
        return "scales its token embeddings after the embedding module, where transformers scales them inside it"


class LayerSite(Site):
    """Decoder layer L's output: the residual stream after it."""

    calibrated = True

    @classmethod
    def in_model(cls, model: nn.Module, layer: int) -> LayerSite:
        return cls(decoder_layers(model)[layer])

    in_vllm_model = in_model  # vLLM's models hold their blocks in one ModuleList too

    @staticmethod
    def prompt_positions(in_prompt: torch.Tensor, positions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # As for the calibration: the first position is an outlier (unless it is all there is).
        return in_prompt & ((positions > 0) | (lengths[:, None] == 1))


SITES: dict[str, type[Site]] = {"embed": EmbeddingSite, "layer": LayerSite}
