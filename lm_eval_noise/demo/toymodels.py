"""Tiny Hugging Face models and tokenizers built locally, for tests, `bench` and demos.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in well under a second
on a built-in corpus, and the models are transformers configs with random weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from ..noise.sites import CALIBRATION_TEXT

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2
# A minimal chat template, so chat tasks (--apply_chat_template) run on toy models.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)
ARCHITECTURES = ("llama", "gpt2")

_CORPUS = [
    CALIBRATION_TEXT,
    "def add(a, b):\n    return a + b\n",
    "def is_even(n):\n    return n % 2 == 0\n",
    "for i in range(10):\n    print(i * i)\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n",
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins "
    "with a single step. Knowledge is power, and time is money.",
    "Question: How many legs does a spider have?\nAnswer: A spider has eight legs.",
]


def build_tokenizer(vocab_size: int = 512, corpus: list[str] | None = None) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus or _CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        chat_template=CHAT_TEMPLATE,
        # What causal LMs take: transformers 4.x also returns token_type_ids by default,
        # which generate() then refuses.
        model_input_names=["input_ids", "attention_mask"],
    )


def build_model(
    arch: str = "llama",
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 512,
    seed: int = 0,
) -> PreTrainedModel:
    """A randomly initialised causal LM: `llama` (untied) or `gpt2` (tied embeddings)."""
    torch.manual_seed(seed)
    common = {"vocab_size": vocab_size, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    if arch == "llama":
        config = LlamaConfig(
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 4,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=max_positions,
            tie_word_embeddings=False,
            **common,
        )
        model = LlamaForCausalLM(config)
    elif arch == "gpt2":
        config = GPT2Config(
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_positions=max_positions,
            tie_word_embeddings=True,
            **common,
        )
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(f"unknown toy architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    return model.eval()


def save_toy_model(path: str | Path, arch: str = "llama", **model_kwargs) -> Path:
    """Build a toy model and tokenizer and save both to `path` (a from_pretrained dir)."""
    path = Path(path)
    tokenizer = build_tokenizer(model_kwargs.get("vocab_size", 512))
    model = build_model(arch, **model_kwargs)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
