"""LMSYS chat glue: prompts from lmsys/lmsys-chat-1m (or a local file in its schema),
reference log-prob scoring of every answer in batches, and per-prompt metrics.

Settable with `--metadata '{...}'` (no YAML edit): `lmsys_path` (local .json/.jsonl/
.parquet file in the dataset's schema, or a hub id; default the gated hub dataset),
`num_prompts` (100), `language` (English; "all" for any), `max_prompt_len` (256
tokens under the evaluated model's tokenizer; longer prompts are dropped),
`reference_model` (default: the evaluated model, `pretrained`, without noise), with
`reference_gguf_file` (a GGUF checkpoint inside it) and `reference_dtype`.

Each doc records whether its answers are judged by the generator's own weights
(`self_scored`, decided by scoring.identity, undecided counting as yes) and why: a sweep's
chat verdict needs an independent reference and reads this record.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import InputError

logger = logging.getLogger(__name__)
HUB_DATASET = "lmsys/lmsys-chat-1m"
_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _rows(lmsys_path: str | None):
    import datasets

    source = lmsys_path or HUB_DATASET
    path = Path(source)
    if not path.is_file() and (path.suffix in _FORMATS or path.is_absolute() or source.startswith(".")):
        raise InputError(f"lmsys_path={source!r}: no such file (a local .json, .jsonl or .parquet file in "
                         "lmsys-chat-1m's schema, or a hub dataset id)")
    if path.is_file():
        if path.suffix not in _FORMATS:
            raise InputError(f"lmsys_path={source!r}: expected a {', '.join(_FORMATS)} file")
        try:
            return datasets.load_dataset(_FORMATS[path.suffix], data_files=str(path), split="train")
        except Exception as error:  # noqa: BLE001 - datasets raises many types for a malformed file
            cause = error.__cause__ or error  # DatasetGenerationError wraps the parser's error
            text = " ".join(str(cause).split())[:300]
            raise InputError(f"lmsys_path={source!r}: not a readable {path.suffix} file ({type(cause).__name__}: "
                             f"{text})") from None
    # The hub dataset is gated: accept its terms on the hub, then `hf auth login` or HF_TOKEN.
    return datasets.load_dataset(source, split="train", streaming=True)


def first_user_turn(conversation) -> str | None:
    for turn in conversation or []:
        if turn.get("role") == "user":
            return turn.get("content")
    return None


def _checked_conversation(row, index: int, source: str):
    """A row's `conversation` in lmsys-chat-1m's schema (a list of {"role", "content"}
    turns), or an InputError naming the row: a file of another shape fails here, in one
    line, not as an AttributeError deep in the loop."""
    conversation = row.get("conversation") if isinstance(row, dict) else None
    if not isinstance(conversation, list) or not all(
            isinstance(turn, dict) and isinstance(turn.get("role"), str)
            and isinstance(turn.get("content"), (str, type(None))) for turn in conversation):
        has = sorted(row) if isinstance(row, dict) else repr(row)[:80]
        raise InputError(f"lmsys_path={source!r}: row {index} has no `conversation` list of {{\"role\", "
                         f"\"content\"}} turns (lmsys-chat-1m's schema); it has {has}")
    return conversation


def load_lmsys(
    lmsys_path: str | None = None,
    num_prompts: int = 100,
    language: str = "English",
    max_prompt_len: int = 256,
    reference_model: str | None = None,
    reference_gguf_file: str | None = None,
    reference_dtype: str | None = None,
    pretrained: str | None = None,
    tokenizer: str | None = None,
    gguf_file: str | None = None,
    dtype: str | None = None,
    revision: str | None = None,
    **_metadata,
) -> dict:
    """{"test": Dataset} of the first `num_prompts` qualifying first user turns."""
    import datasets
    from transformers import AutoTokenizer

    from ..scoring.identity import Identity, Weights, same_weights
    from ..scoring.reference import check_gguf
    from ..scoring.self_scoring import SELF_SCORED_KEY, SELF_SCORED_REASON_KEY, SELF_SCORING_KEY

    tokenizer_name = tokenizer or pretrained
    if tokenizer_name is None or not isinstance(tokenizer_name, str):
        raise InputError("lmsys_chat_noise needs the model's `pretrained` (or `tokenizer`) to apply max_prompt_len")
    if reference_gguf_file and not reference_model:
        raise InputError(f"reference_gguf_file={reference_gguf_file!r} needs reference_model: the folder or hub "
                         "repo that holds it")
    # Checked now, not after every answer is generated.
    check_gguf(reference_model, reference_gguf_file, "reference_model", "reference_gguf_file")
    generator = Weights(str(pretrained or tokenizer_name), gguf_file, revision)
    if reference_model is None:
        reference, identity = generator, Identity(True, "no reference_model: the evaluated model scores itself")
    else:
        reference = Weights(reference_model, reference_gguf_file)
        identity = same_weights(generator, reference)
    if identity.same is None:
        logger.warning("lmsys_chat_noise: %s; counted as self-scored, so chat verdicts stay undetermined",
                       identity.reason)
    # The reference's weights are the generator's: hf-noise scores with the weights it holds
    # (noise off) instead of loading them again, unless another dtype is asked for.
    own_weights = identity.same is True and reference_dtype in (None, dtype)
    # A GGUF checkpoint (gguf_file= in model_args) holds the tokenizer too, unless
    # `tokenizer` names another (as HFLM decides).
    from_gguf = {"gguf_file": gguf_file} if gguf_file and not tokenizer else {}
    counter = AutoTokenizer.from_pretrained(tokenizer_name, **from_gguf)
    docs = []
    for index, row in enumerate(_rows(lmsys_path)):
        if len(docs) >= int(num_prompts):
            break
        conversation = _checked_conversation(row, index, lmsys_path or HUB_DATASET)
        if language not in (None, "all") and row.get("language") != language:
            continue
        prompt = first_user_turn(conversation)
        if not prompt or not prompt.strip():
            continue
        if len(counter(prompt, add_special_tokens=False)["input_ids"]) > int(max_prompt_len):
            continue
        docs.append({
            "conversation_id": str(row.get("conversation_id", len(docs))),
            "language": row.get("language"),
            "prompt": prompt,
            "reference_model": reference.name,
            "reference_gguf_file": reference.gguf_file,
            "reference_dtype": reference_dtype or (dtype if identity.same else None),
            SELF_SCORING_KEY: own_weights,
            SELF_SCORED_KEY: identity.same is not False,
            SELF_SCORED_REASON_KEY: identity.reason,
        })
    return {"test": datasets.Dataset.from_list(docs)}


def score_with_reference(resps, docs):
    """Filter: per prompt, one JSON record per answer (response, tokens, per-token
    log-probs under the reference). Answers that hf-noise already scored with its own
    weights keep that score; the others are scored here in batches under the reference
    loaded by name (with --model hf and the default reference: the evaluated model,
    loaded a second time)."""
    from ..scoring.reference import load_reference
    from ..scoring.self_scoring import ScoredAnswer, asks_for_self_scoring, score_doc_answers

    answers = [(doc, answer) for doc, doc_answers in zip(docs, resps) for answer in doc_answers]
    unscored = [i for i, (doc, answer) in enumerate(answers)
                if not (isinstance(answer, ScoredAnswer) and asks_for_self_scoring(doc))]
    if unscored:
        doc = docs[0]
        model, tokenizer = load_reference(doc["reference_model"], dtype=doc.get("reference_dtype") or "auto",
                                          gguf_file=doc.get("reference_gguf_file"))
        scored = score_doc_answers(model, tokenizer, [answers[i][0] for i in unscored],
                                   [answers[i][1] for i in unscored])
        for i, answer in zip(unscored, scored):
            answers[i] = (answers[i][0], answer)
    records = iter(json.dumps({"response": str(answer), **answer.record}) for _, answer in answers)
    return [[next(records) for _ in doc_answers] for doc_answers in resps]


def process_results(doc, results) -> dict[str, float]:
    from ..metrics import (
        distinct_n,
        edit_distance,
        edit_distance_matched,
        is_degenerate,
        pairwise_bleu,
        response_length,
        self_bleu,
    )

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
            "edit_distance_matched": edit_distance_matched(responses),  # the verdict's: length cannot fake it
        })
    return metrics
