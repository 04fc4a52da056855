"""The LMSYS chat task end to end on a small local file in the dataset's schema."""

from __future__ import annotations

import json

import pytest
from helpers import make_lm
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from lm_eval_noise import scoring
from lm_eval_noise.resources import tasks_dir
from lm_eval_noise.tasks.lmsys import first_user_turn, load_lmsys

CHATS = [
    ("a", "English", "What is the capital of France?"),
    ("b", "German", "Was ist die Hauptstadt von Frankreich?"),
    ("c", "English", "   "),
    ("d", "English", "Write a function that adds two numbers. " * 20),  # too long
    ("e", "English", "Tell me a joke about a spider."),
    ("f", "English", "How many legs does a spider have?"),
    ("g", "English", "Name a prime number."),
]


@pytest.fixture(scope="module")
def chats_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("lmsys") / "chats.jsonl"
    with path.open("w") as handle:
        for conversation_id, language, text in CHATS:
            handle.write(json.dumps({
                "conversation_id": conversation_id, "model": "vicuna-13b", "turn": 1,
                "language": language, "redacted": False, "openai_moderation": [],
                "conversation": [{"role": "user", "content": text},
                                 {"role": "assistant", "content": "an answer"}],
            }) + "\n")
    return str(path)


def test_loader_filters_language_emptiness_and_length(chats_file, toy_paths):
    docs = load_lmsys(lmsys_path=chats_file, num_prompts=3, max_prompt_len=40, pretrained=toy_paths["llama"])["test"]
    assert docs["conversation_id"] == ["a", "e", "f"]
    assert set(docs["reference_model"]) == {toy_paths["llama"]}
    everything = load_lmsys(lmsys_path=chats_file, language="all", max_prompt_len=10_000,
                            pretrained=toy_paths["llama"], reference_model="other")["test"]
    assert everything["conversation_id"] == ["a", "b", "d", "e", "f", "g"]
    assert set(everything["reference_model"]) == {"other"}


def test_first_user_turn_skips_other_roles():
    assert first_user_turn([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]) == "y"
    assert first_user_turn([]) is None


def _run(lm, task, metadata):
    return simple_evaluate(
        model=lm, tasks=[task], task_manager=TaskManager(include_path=str(tasks_dir()), metadata=metadata),
        apply_chat_template=True, log_samples=True, bootstrap_iters=0,
    )


def test_chat_task_scores_answers_with_the_live_model_by_default(chats_file, toy_paths, monkeypatch):
    loads = []
    monkeypatch.setattr(scoring, "load_reference", lambda *a, **k: loads.append(a) or pytest.fail("reloaded"))
    path = toy_paths["llama"]
    lm = make_lm(path, sigma_scale=0.3, batch_size=4)
    metadata = {"pretrained": path, "lmsys_path": chats_file, "num_prompts": 3, "max_prompt_len": 40}
    out = _run(lm, "lmsys_chat_noise_n5", metadata)
    metrics = out["results"]["lmsys_chat_noise_n5"]
    for name in ("response_length", "empty_rate", "degenerate_rate", "ref_logprob_mean", "self_bleu", "distinct_2"):
        assert f"{name},reference" in metrics
    assert metrics["ref_logprob_mean,reference"] < 0
    sample = out["samples"]["lmsys_chat_noise_n5"][0]
    assert sample["arguments"][0][0].startswith("<s>user: ")  # chat template applied
    records = [json.loads(r) for r in sample["filtered_resps"][0]]
    assert len(records) == 5 and len(records[0]["token_logprobs"]) == records[0]["num_tokens"]
    assert loads == []


def test_chat_task_reference_model_is_chosen_through_metadata(chats_file, toy_paths):
    lm = make_lm(toy_paths["llama"], sigma_scale=0.3, batch_size=4)
    base = {"pretrained": toy_paths["llama"], "lmsys_path": chats_file, "num_prompts": 2, "max_prompt_len": 40}
    own = _run(lm, "lmsys_chat_noise", base)["results"]["lmsys_chat_noise"]["ref_logprob_mean,reference"]
    other = _run(lm, "lmsys_chat_noise", {**base, "reference_model": toy_paths["gpt2"]})
    assert other["results"]["lmsys_chat_noise"]["ref_logprob_mean,reference"] != own
    assert other["samples"]["lmsys_chat_noise"][0]["doc"]["reference_model"] == toy_paths["gpt2"]
