"""Self-scoring: the protocol between the hf-noise model and a task whose answers are
scored by the evaluated model itself (noise off), so the weights are not loaded twice."""

from __future__ import annotations

import json
from pathlib import Path

from .identity import Weights, same_weights
from .reference import chat_prompt, score_responses

# A task whose doc sets this key to True asks the evaluated model itself to score its
# answers, noise off, on the doc's "prompt" under its chat template. hf-noise does so
# right after generating, with the weights it already holds, and returns ScoredAnswers;
# any other model returns plain strings and the task loads the model by name instead.
SELF_SCORING_KEY = "score_with_evaluated_model"


# What a chat task records in each doc: whether its answers are judged by the generator's
# own weights (identity.same_weights; undecided counts as yes), and why. A sweep's verdict
# reads this record rather than comparing model names.
SELF_SCORED_KEY = "self_scored"
SELF_SCORED_REASON_KEY = "self_scored_reason"


def asks_for_self_scoring(doc) -> bool:
    return isinstance(doc, dict) and doc.get(SELF_SCORING_KEY) is True


class ScoredAnswer(str):
    """A generated answer carrying its score under the evaluated model
    (`ScoredResponse.to_record()`): the score travels with the answer, so the weights
    never need to be found again or loaded twice."""

    record: dict

    def __new__(cls, text: str, record: dict):
        answer = super().__new__(cls, text)
        answer.record = record
        return answer

    def __reduce__(self):  # pickled by lm-eval's request cache
        return ScoredAnswer, (str(self), self.record)


def score_doc_answers(model, tokenizer, docs: list[dict], answers: list[str]) -> list[ScoredAnswer]:
    """Each answer scored under `model` given its doc's chat-formatted prompt."""
    prompts = [chat_prompt(tokenizer, doc["prompt"]) for doc in docs]
    scored = score_responses(model, tokenizer, prompts, answers, progress=True)
    return [ScoredAnswer(answer, score.to_record()) for answer, score in zip(answers, scored)]


def recorded_self_scoring(run_dir) -> bool | None:
    """What a run's logged docs say (SELF_SCORED_KEY): True if any samples file's docs
    say self-scored, None if none records it (not a chat run, or logged before it was
    recorded). A task loads every doc of a run with one reference, so the first doc of
    each file speaks for the file."""
    recorded = None
    for path in sorted(Path(run_dir).rglob("samples_*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            first = next((line for line in handle if line.strip()), None)
        value = (json.loads(first).get("doc") or {}).get(SELF_SCORED_KEY) if first else None
        if value is True:
            return True
        if value is False:
            recorded = False
    return recorded


def judged_self_scored(entry: dict, reference_model: str | None) -> bool:
    """Whether a sweep entry's chat answers were scored by its generator's weights: as the
    entry states ("self_scored"), else as its run recorded, else by the identity of its
    model_args' weights and `reference_model` (the sweep's metadata; None is lmsys's
    default, the generator). Undecided counts as self-scored."""
    if "self_scored" in entry:
        return bool(entry["self_scored"])
    recorded = recorded_self_scoring(entry["directory"]) if entry.get("directory") else None
    if recorded is not None:
        return recorded
    if reference_model is None:
        return True
    generator = Weights.from_model_args(entry.get("model_args") or {"pretrained": entry["model"]})
    return same_weights(generator, Weights(reference_model)).same is not False
