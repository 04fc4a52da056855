"""Reference log-prob scoring, checked against a direct computation with the model."""

from __future__ import annotations

import json
import math

import pytest
from helpers import direct_logprobs
from transformers import AutoModelForCausalLM, AutoTokenizer

from lm_eval_noise.scoring.reference import score_responses

PAIRS = [
    ("<s>user: hello\nassistant:", " Hi there, how can I help?"),
    ("Question: How many legs does a spider have?\nAnswer:", " eight"),
    ("def add(a, b):", "\n    return a + b\n"),
    ("The quick brown fox", ""),
    ("x", " jumps over the lazy dog. " * 5),
]


def test_batched_scores_equal_a_direct_computation(toy_path):
    model = AutoModelForCausalLM.from_pretrained(toy_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_path)
    prompts, responses = zip(*PAIRS)
    scored = score_responses(model, tokenizer, list(prompts), list(responses), batch_size=3)
    for (prompt, response), result in zip(PAIRS, scored):
        expected = direct_logprobs(model, tokenizer, prompt, response)
        assert result.token_logprobs == pytest.approx(expected, abs=1e-4)
        assert result.total == pytest.approx(sum(expected), abs=1e-3)
        assert "".join(result.tokens) == response
    assert scored[3].tokens == [] and math.isnan(scored[3].mean)


def test_batch_size_does_not_change_scores(toy_path):
    model = AutoModelForCausalLM.from_pretrained(toy_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_path)
    prompts, responses = map(list, zip(*PAIRS))
    one = score_responses(model, tokenizer, prompts, responses, batch_size=1)
    many = score_responses(model, tokenizer, prompts, responses, batch_size=5)
    for a, b in zip(one, many):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)


def test_mismatched_inputs_are_refused(toy_path):
    model = AutoModelForCausalLM.from_pretrained(toy_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_path)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        score_responses(model, tokenizer, ["a", "b"], ["c"])


def _write_samples(path, rows):
    with path.open("w") as handle:
        for doc_id, (prompt, responses) in enumerate(rows):
            handle.write(json.dumps({
                "doc_id": doc_id, "arguments": {"gen_args_0": {"arg_0": prompt, "arg_1": {"until": []}}},
                "resps": [responses], "filtered_resps": [responses[0]],
            }) + "\n")


def test_score_command_writes_per_token_values_and_a_summary(toy_path, tmp_path, capsys):
    from lm_eval_noise.cli import main

    samples = tmp_path / "samples_chat.jsonl"
    _write_samples(samples, [(PAIRS[0][0], [PAIRS[0][1], " Hello!"]), (PAIRS[1][0], [PAIRS[1][1]])])
    assert main(["score", "--samples", str(samples), "--model", toy_path, "--batch-size", "2"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "samples_chat.scores.jsonl").open()]
    assert [(r["doc_id"], r["repeat"]) for r in rows] == [(0, 0), (0, 1), (1, 0)]
    model = AutoModelForCausalLM.from_pretrained(toy_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(toy_path)
    for row in rows:
        assert row["token_logprobs"] == pytest.approx(
            direct_logprobs(model, tokenizer, row["prompt"], row["response"]), abs=1e-4)
    summary = json.loads((tmp_path / "samples_chat.scores.summary.json").read_text())
    assert summary["answers"] == 3
    assert summary["logprob_total_mean"] == pytest.approx(sum(r["logprob_total"] for r in rows) / 3)


def test_score_command_rejects_a_malformed_samples_file(toy_path, tmp_path, capsys):
    from lm_eval_noise.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"doc_id": 0}\n')
    assert main(["score", "--samples", str(bad), "--model", toy_path]) == 2
    assert "bad.jsonl:1: not a generate_until sample" in capsys.readouterr().err


def test_a_scored_answer_is_a_string_that_keeps_its_score_through_pickle():
    import pickle

    from lm_eval_noise.scoring.self_scoring import ScoredAnswer

    answer = ScoredAnswer("Paris.", {"logprob_total": -1.5})
    restored = pickle.loads(pickle.dumps(answer))  # lm-eval's request cache pickles answers
    assert restored == "Paris." and isinstance(restored, str)
    assert restored.record == {"logprob_total": -1.5}
    assert json.dumps([restored]) == '["Paris."]'  # logged samples see the plain text
