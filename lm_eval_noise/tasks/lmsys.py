"""LMSYS chat glue: prompts from lmsys/lmsys-chat-1m (or a local file in its schema),
reference log-prob scoring of every answer in batches, and per-prompt metrics.

Settable with `--metadata '{...}'` (no YAML edit): `lmsys_path` (local .json/.jsonl/
.parquet file in the dataset's schema, or a hub id; default the gated hub dataset),
`num_prompts` (100), `language` (English; "all" for any), `max_prompt_len` (256
tokens under the evaluated model's tokenizer; longer prompts are dropped),
`reference_model` (default: the evaluated model, `pretrained`, without noise).
"""

from __future__ import annotations

import json
from pathlib import Path

HUB_DATASET = "lmsys/lmsys-chat-1m"
_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _rows(lmsys_path: str | None):
    import datasets

    source = lmsys_path or HUB_DATASET
    path = Path(source)
    if path.is_file():
        if path.suffix not in _FORMATS:
            raise ValueError(f"lmsys_path={source!r}: expected a {', '.join(_FORMATS)} file")
        return datasets.load_dataset(_FORMATS[path.suffix], data_files=str(path), split="train")
    # The hub dataset is gated: accept its terms on the hub, then `hf auth login` or HF_TOKEN.
    return datasets.load_dataset(source, split="train", streaming=True)


def first_user_turn(conversation) -> str | None:
    for turn in conversation or []:
        if turn.get("role") == "user":
            return turn.get("content")
    return None


def load_lmsys(
    lmsys_path: str | None = None,
    num_prompts: int = 100,
    language: str = "English",
    max_prompt_len: int = 256,
    reference_model: str | None = None,
    pretrained: str | None = None,
    tokenizer: str | None = None,
    gguf_file: str | None = None,
    **_metadata,
) -> dict:
    """{"test": Dataset} of the first `num_prompts` qualifying first user turns."""
    import datasets
    from transformers import AutoTokenizer

    tokenizer_name = tokenizer or pretrained
    if tokenizer_name is None or not isinstance(tokenizer_name, str):
        raise ValueError("lmsys_chat_noise needs the model's `pretrained` (or `tokenizer`) to apply max_prompt_len")
    reference = reference_model or pretrained
    # A GGUF checkpoint (gguf_file= in model_args) holds the tokenizer too.
    counter = AutoTokenizer.from_pretrained(tokenizer_name, **({"gguf_file": gguf_file} if gguf_file else {}))
    docs = []
    for row in _rows(lmsys_path):
        if len(docs) >= int(num_prompts):
            break
        if language not in (None, "all") and row.get("language") != language:
            continue
        prompt = first_user_turn(row.get("conversation"))
        if not prompt or not prompt.strip():
            continue
        if len(counter(prompt, add_special_tokens=False)["input_ids"]) > int(max_prompt_len):
            continue
        docs.append({
            "conversation_id": str(row.get("conversation_id", len(docs))),
            "language": row.get("language"),
            "prompt": prompt,
            "reference_model": reference,
            "reference_gguf_file": gguf_file if reference == pretrained else None,
        })
    return {"test": datasets.Dataset.from_list(docs)}


def _reference(name: str, gguf_file: str | None = None):
    from ..model import live_model
    from ..scoring import load_reference

    return live_model(name) or load_reference(name, gguf_file=gguf_file)


def _formatted(tokenizer, prompt: str) -> str:
    """The prompt as a chat model sees it: the reference's own chat template with the
    generation prompt (what --apply_chat_template does), or the raw text without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt


def score_with_reference(resps, docs):
    """Filter: every answer of every prompt scored under the reference model, in batches;
    per prompt, one JSON record per answer (response, tokens, per-token log-probs)."""
    from ..scoring import score_responses

    model, tokenizer = _reference(docs[0]["reference_model"], docs[0].get("reference_gguf_file"))
    prompts, responses, owners = [], [], []
    for index, (answers, doc) in enumerate(zip(resps, docs)):
        for answer in answers:
            prompts.append(_formatted(tokenizer, doc["prompt"]))
            responses.append(answer)
            owners.append(index)
    scored = score_responses(model, tokenizer, prompts, responses, progress=True)
    records = [[] for _ in docs]
    for owner, response, score in zip(owners, responses, scored):
        records[owner].append(json.dumps({"response": response, **score.to_record()}))
    return records


def process_results(doc, results) -> dict[str, float]:
    from ..metrics import distinct_n, edit_distance, is_degenerate, pairwise_bleu, response_length, self_bleu

    records = [json.loads(record) for record in results[0]]
    responses = [r["response"] for r in records]
    means = [r["logprob_mean"] for r in records if r["num_tokens"]]
    metrics = {
        "response_length": sum(map(response_length, responses)) / len(responses),
        "empty_rate": sum(not r.strip() for r in responses) / len(responses),
        "degenerate_rate": sum(map(is_degenerate, responses)) / len(responses),
        "ref_logprob_total": sum(r["logprob_total"] for r in records) / len(records),
    }
    if means:  # undefined when every answer is empty: left out, never NaN
        metrics["ref_logprob_mean"] = sum(means) / len(means)
    if len(responses) >= 2:
        metrics.update({
            "distinct_1": distinct_n(responses, 1),
            "distinct_2": distinct_n(responses, 2),
            "self_bleu": self_bleu(responses),
            "pairwise_bleu": pairwise_bleu(responses),
            "edit_distance": edit_distance(responses),
        })
    return metrics
