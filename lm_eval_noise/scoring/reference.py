"""Reference log-prob scoring: how likely a reference model finds each generated answer,
and the loading of that model.

For a (formatted prompt, response) pair: the log-probability of every response token
given the prompt and the response tokens before it, under the reference model, and
their total and mean. Pairs are scored in batches, longest first, right-padded.
Tokenization: the prompt and the response are encoded separately and concatenated
(as lm-eval does for loglikelihood requests), so the boundary is exact; the prompt
gets the tokenizer's special tokens unless it already starts with the BOS text (a
chat template usually adds it), the response never does.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import InputError, require


@dataclass(frozen=True)
class ScoredResponse:
    tokens: list[str]  # each response token decoded on its own, for display
    token_logprobs: list[float]

    @property
    def total(self) -> float:
        return math.fsum(self.token_logprobs)

    @property
    def mean(self) -> float:
        return self.total / len(self.token_logprobs) if self.token_logprobs else math.nan

    def to_record(self) -> dict:
        return {**asdict(self), "logprob_total": self.total, "logprob_mean": self.mean,
                "num_tokens": len(self.tokens)}


def chat_prompt(tokenizer, prompt: str) -> str:
    """The prompt as a chat model sees it: the tokenizer's own chat template with the
    generation prompt (what --apply_chat_template does), or the raw text without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt


def encode_pair(tokenizer, prompt: str, response: str, max_length: int) -> tuple[list[int], list[int]]:
    bos = tokenizer.bos_token
    special = not (bos and prompt.startswith(bos))
    prompt_ids = tokenizer(prompt, add_special_tokens=special)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if not prompt_ids:  # the first response token needs something to be predicted from
        prompt_ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    # Keep the whole response if possible; cut the prompt from the left.
    response_ids = response_ids[: max_length - 1]
    prompt_ids = prompt_ids[-(max_length - len(response_ids)):]
    return prompt_ids, response_ids


def padded_batches(pairs: list[tuple[list[int], list[int]]], batch_size: int):
    """(row indices, ids, attention mask) per batch of prompt+response sequences,
    longest first, right-padded with 0."""
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        sequences = [pairs[i][0] + pairs[i][1] for i in batch]
        ids = torch.zeros((len(batch), max(map(len, sequences))), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
        yield batch, ids, mask


@torch.no_grad()
def score_responses(
    model, tokenizer, prompts: list[str], responses: list[str], *, batch_size: int = 8,
    max_length: int | None = None, progress: bool = False,
) -> list[ScoredResponse]:
    """Score every response given its prompt under `model`, in input order."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    max_length = max_length or _model_max_length(model)
    pairs = [encode_pair(tokenizer, p, r, max_length) for p, r in zip(prompts, responses)]
    device = next(model.parameters()).device
    results: list[ScoredResponse | None] = [None] * len(pairs)
    batches = padded_batches(pairs, batch_size)
    total = -(-len(pairs) // batch_size)
    for batch, ids, mask in tqdm(batches, total=total, desc="Scoring responses", disable=not progress):
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        for row, index in enumerate(batch):
            prompt_ids, response_ids = pairs[index]
            start = len(prompt_ids)
            # Position t predicts token t + 1; normalise only the rows we need.
            scored = logits[row, start - 1 : start - 1 + len(response_ids)].float()
            targets = torch.tensor(response_ids, device=device)[:, None]
            values = scored.gather(1, targets)[:, 0] - torch.logsumexp(scored, dim=-1)
            results[index] = ScoredResponse(
                tokens=[tokenizer.decode([token]) for token in response_ids],
                token_logprobs=values.tolist(),
            )
    return results


def _model_max_length(model) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return 2048


def check_gguf(name: str | None, gguf_file: str | None, model_flag: str = "--model",
               file_flag: str = "--gguf-file") -> None:
    """One line for each way a GGUF checkpoint is mis-given, before anything loads:
    transformers wants the folder (or hub repo) as the model and the file name beside it."""
    if name is None:
        return
    local = Path(name).expanduser()
    if gguf_file is None:
        if name.endswith(".gguf"):
            raise InputError(f"{model_flag} {name!r} is a GGUF file: give its folder (or hub repo) as {model_flag} "
                             f"and its file name as {file_flag}")
        return
    if not gguf_file.endswith(".gguf"):
        raise InputError(f"{file_flag} {gguf_file!r}: not a .gguf file name")
    if local.is_file():
        raise InputError(f"{model_flag} {name!r} is a file: with {file_flag}, {model_flag} is the folder (or hub "
                         "repo) that holds the GGUF file")
    if local.is_dir() and not (local / gguf_file).is_file():
        raise InputError(f"{file_flag} {gguf_file!r}: no such file in {name}")


@functools.lru_cache(maxsize=2)
def load_reference(name_or_path: str, device: str | None = None, dtype: str = "auto", gguf_file: str | None = None):
    """(model, tokenizer) of a reference model, loaded once per process. `gguf_file`: a
    GGUF checkpoint inside `name_or_path`, as for --model hf."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_gguf(name_or_path, gguf_file)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    if gguf_file:
        require("gguf", "gguf", "gguf_file")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **extra)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **extra)
    except OSError as error:  # transformers' "not a local folder and not a valid model identifier"
        raise InputError(f"cannot load model {name_or_path!r}: {' '.join(str(error).split())}") from error
    return model.to(device).eval(), tokenizer
