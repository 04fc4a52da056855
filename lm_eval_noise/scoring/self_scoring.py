"""Self-scoring: the protocol between the hf-noise model and a task whose answers are
scored by the evaluated model itself (noise off), so the weights are not loaded twice."""

from __future__ import annotations

from .reference import chat_prompt, score_responses

# A task whose doc sets this key to True asks the evaluated model itself to score its
# answers, noise off, on the doc's "prompt" under its chat template. hf-noise does so
# right after generating, with the weights it already holds, and returns ScoredAnswers;
# any other model returns plain strings and the task loads the model by name instead.
SELF_SCORING_KEY = "score_with_evaluated_model"


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
