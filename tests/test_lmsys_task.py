"""The LMSYS chat task end to end on a small local file in the dataset's schema."""

from __future__ import annotations

import json

import pytest
from helpers import direct_logprobs, make_lm
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from lm_eval_noise.errors import InputError
from lm_eval_noise.harness.task_configs import tasks_dir
from lm_eval_noise.scoring import reference as scoring
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
        model=lm, tasks=[task],
        task_manager=TaskManager(include_path=str(tasks_dir()), include_defaults=False, metadata=metadata),
        apply_chat_template=True, log_samples=True, bootstrap_iters=0,
    )


def _records(out, task):
    return [json.loads(record) for sample in out["samples"][task] for record in sample["filtered_resps"][0]]


def _rescored(path, out, task, **load_kwargs):
    """Each logged answer's per-token log-probs recomputed by hand under a freshly loaded
    copy of `path`, without noise, after the chat-formatted prompt the model was given
    (--apply_chat_template, the same template): one unbatched forward pass per answer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, **load_kwargs).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return [direct_logprobs(model, tokenizer, sample["arguments"][0][0], answer)
            for sample in out["samples"][task] for answer in sample["resps"][0]]


def test_chat_task_scores_answers_with_the_evaluated_model_by_default(chats_file, toy_paths, monkeypatch):
    loads = []
    monkeypatch.setattr(scoring, "load_reference", lambda *a, **k: loads.append(a) or pytest.fail("reloaded"))
    path = toy_paths["llama"]
    lm = make_lm(path, sigma_scale=0.3, batch_size=4)
    metadata = {"pretrained": path, "lmsys_path": chats_file, "num_prompts": 3, "max_prompt_len": 40}
    out = _run(lm, "lmsys_chat_noise_n5", metadata)
    metrics = out["results"]["lmsys_chat_noise_n5"]
    for name in ("response_length", "empty_rate", "degenerate_rate", "ref_logprob_mean", "self_bleu", "distinct_2",
                 "edit_distance_matched"):
        assert f"{name},reference" in metrics
    assert metrics["ref_logprob_mean,reference"] < 0
    sample = out["samples"]["lmsys_chat_noise_n5"][0]
    assert sample["arguments"][0][0].startswith("<s>user: ")  # chat template applied
    records = _records(out, "lmsys_chat_noise_n5")
    assert len(records) == 15 and len(records[0]["token_logprobs"]) == records[0]["num_tokens"]
    assert loads == []
    # The scores are the model's without noise: a fresh copy gives the same numbers.
    monkeypatch.undo()
    for record, expected in zip(records, _rescored(path, out, "lmsys_chat_noise_n5"), strict=True):
        assert record["token_logprobs"] == pytest.approx(expected, abs=1e-4)


def test_each_evaluated_model_scores_with_its_own_weights(chats_file, toy_paths):
    """Two models from one path in one process (float32 and bfloat16): each run's answers
    are scored by the model that produced them, not by whichever was loaded last."""
    import torch

    path = toy_paths["llama"]
    metadata = {"pretrained": path, "lmsys_path": chats_file, "num_prompts": 2, "max_prompt_len": 40}
    float32 = make_lm(path, sigma_scale=0.3, batch_size=4, dtype="float32")
    bfloat16 = make_lm(path, sigma_scale=0.3, batch_size=4, dtype="bfloat16")
    for lm, dtype in ((float32, torch.float32), (bfloat16, torch.bfloat16)):
        out = _run(lm, "lmsys_chat_noise", metadata)
        expected = _rescored(path, out, "lmsys_chat_noise", dtype=dtype)
        for record, own in zip(_records(out, "lmsys_chat_noise"), expected, strict=True):
            assert record["token_logprobs"] == pytest.approx(own, abs=1e-4)


def test_plain_hf_loads_the_evaluated_model_to_score(chats_file, toy_paths, monkeypatch):
    """--model hf returns plain strings: the filter loads the evaluated model by name,
    in the run's dtype (model_args reach the task's metadata, as the CLI does)."""
    import torch
    from lm_eval.models.huggingface import HFLM

    loads = []
    real = scoring.load_reference
    monkeypatch.setattr(scoring, "load_reference", lambda *a, **k: loads.append((a, k)) or real(*a, **k))
    path = toy_paths["llama"]
    metadata = {"pretrained": path, "dtype": "bfloat16", "lmsys_path": chats_file, "num_prompts": 2,
                "max_prompt_len": 40}
    out = _run(HFLM(pretrained=path, device="cpu", batch_size=4, dtype="bfloat16"), "lmsys_chat_noise", metadata)
    assert loads == [((path,), {"dtype": "bfloat16", "gguf_file": None})]
    expected_records = _rescored(path, out, "lmsys_chat_noise", dtype=torch.bfloat16)
    for record, expected in zip(_records(out, "lmsys_chat_noise"), expected_records, strict=True):
        assert record["token_logprobs"] == pytest.approx(expected, abs=1e-4)


def test_chat_task_reference_model_is_chosen_through_metadata(chats_file, toy_paths):
    lm = make_lm(toy_paths["llama"], sigma_scale=0.3, batch_size=4)
    base = {"pretrained": toy_paths["llama"], "lmsys_path": chats_file, "num_prompts": 2, "max_prompt_len": 40}
    own = _run(lm, "lmsys_chat_noise", base)["results"]["lmsys_chat_noise"]["ref_logprob_mean,reference"]
    other = _run(lm, "lmsys_chat_noise", {**base, "reference_model": toy_paths["gpt2"]})
    assert other["results"]["lmsys_chat_noise"]["ref_logprob_mean,reference"] != own
    assert other["samples"]["lmsys_chat_noise"][0]["doc"]["reference_model"] == toy_paths["gpt2"]


@pytest.mark.parametrize("content, message", [
    ('{"conversation": [{"role": "user", "content": "hi"}]}\n{"conversation": [oops\n',
     "not a readable .jsonl file"),
    ('{"conversation_id": "a", "turns": [{"role": "user", "content": "hi"}]}\n',
     "row 0 has no `conversation` list of {\"role\", \"content\"} turns (lmsys-chat-1m's schema); it has "
     "['conversation_id', 'turns']"),
    ('{"conversation": "just a string"}\n', "row 0 has no `conversation` list"),
])
def test_a_chats_file_of_another_shape_is_one_input_error(tmp_path, toy_paths, content, message):
    """A malformed file was a 115-line traceback, a wrong schema a 62-line AttributeError."""
    path = tmp_path / "chats.jsonl"
    path.write_text(content)
    with pytest.raises(InputError) as raised:
        load_lmsys(lmsys_path=str(path), pretrained=toy_paths["llama"])
    assert message in str(raised.value) and "\n" not in str(raised.value)
