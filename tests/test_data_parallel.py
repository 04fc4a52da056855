"""Data parallel: two processes give, sample by sample, what one process gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import generation_requests, loglikelihood_requests, make_lm

DOCS = [  # an odd number: lm-eval pads the shorter rank (see _without_rank_padding in model.py)
    {"prompt": "def add(a, b):", "target": " return a + b"},
    {"prompt": "The quick brown", "target": " fox"},
    {"prompt": "Question: How many legs does a spider have?\nAnswer:", "target": " eight"},
]
TASKS = {
    "dp_gen": 'output_type: generate_until\ndoc_to_text: "{{prompt}}"\ndoc_to_target: "{{target}}"\nrepeats: 2\n'
              'generation_kwargs: {until: ["\\n\\n"], max_gen_toks: 8, do_sample: false}\n'
              "metric_list: [{metric: exact_match}]\n",
    "dp_mc": 'output_type: multiple_choice\ndoc_to_text: "{{prompt}}"\n'
             'doc_to_choice: ["{{target}}", " banana", " a"]\ndoc_to_target: 0\nmetric_list: [{metric: acc}]\n',
    "dp_ppl": 'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{prompt}}{{target}}"\n'
              "metric_list: [{metric: word_perplexity}]\n",
}
# accelerate 1.15: `--cpu` launches a single process; ACCELERATE_USE_CPU with
# --multi_gpu launches N processes that join a gloo group on the CPU.
LAUNCH = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def _task_dir(root: Path, docs: list[dict]) -> Path:
    data = root / "docs.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    for name, body in TASKS.items():
        (root / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs: {{data_files: {json.dumps(str(data))}}}\n"
            f"test_split: train\nmetadata: {{version: 1.0}}\n" + body
        )
    return root


def _run(launcher: list[str], task_dir: Path, out: Path, model_args: str):
    command = [*(launcher or [sys.executable]), "-m", "lm_eval", "--model", "hf-noise", "--model_args", model_args,
               "--tasks", ",".join(TASKS), "--include_path", str(task_dir), "--batch_size", "2",
               "--output_path", str(out), "--log_samples"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "ACCELERATE_USE_CPU": "true"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    samples = {}
    for path in out.rglob("samples_*.jsonl"):
        for line in path.open():
            sample = json.loads(line)
            task = path.name.removeprefix("samples_").rsplit("_", 1)[0]
            samples[(task, sample["doc_id"])] = sample["resps"]
    return results, samples, done.stderr


@pytest.mark.slow
def test_two_processes_give_the_outputs_and_scores_of_one(toy_paths, tmp_path):
    (tmp_path / "tasks").mkdir()
    task_dir = _task_dir(tmp_path / "tasks", DOCS)
    args = f"pretrained={toy_paths['llama']},sigma_scale=0.8,noise_reference=prompt"
    one_results, one, _ = _run([], task_dir, tmp_path / "one", args)
    two_results, two, log = _run(LAUNCH, task_dir, tmp_path / "two", args)
    assert "on rank 1" in log  # really two processes, each with its share
    assert "padded this process with" in log  # rank 1 got copies of its last request
    assert one.keys() == two.keys() and len(one) == 3 * len(TASKS)
    for key, responses in one.items():
        if key[0] == "dp_gen":
            assert two[key] == responses
            assert len(set(responses[0])) == 2  # two repeats, two noise draws
        else:
            flat = [float(r[0][0] if isinstance(r[0], list) else r[0]) for r in responses]
            other = [float(r[0][0] if isinstance(r[0], list) else r[0]) for r in two[key]]
            assert other == pytest.approx(flat, rel=1e-5)
    # Rank 0 writes the results JSON with every rank's per-sample reference norms.
    norms = [results["config"]["noise"]["prompt_reference_norms"] for results in (one_results, two_results)]
    assert len(norms[0]) == 6 + 3 + 3  # generation samples, questions, rolling windows
    assert norms[1] == pytest.approx(norms[0])


def _as_lm_eval_pads(requests, missing: int):
    """The request list lm-eval 0.4.13 gives a rank with `missing` fewer requests than
    the longest: its last request again, `repeats` times per missing request."""
    last = requests[-1]
    return requests + [last] * (last.repeats * missing)


@pytest.mark.parametrize("kind", ["generate_until", "loglikelihood"])
def test_rank_padding_adds_no_answers_to_a_document(toy_path, kind, caplog):
    requests = generation_requests(repeats=2) if kind == "generate_until" else loglikelihood_requests(repeats=2)
    lm = make_lm(toy_path, batch_size=3, sigma_scale=0.8)
    with caplog.at_level("WARNING", logger="lm_eval_noise.harness.model"):
        want = getattr(lm, kind)(requests)
        assert "padded this process" not in caplog.text
        fresh = generation_requests(repeats=2) if kind == "generate_until" else loglikelihood_requests(repeats=2)
        padded = _as_lm_eval_pads(fresh, missing=2)
        answers = getattr(lm, kind)(padded)
    assert "padded this process with 4 copies" in caplog.text
    assert len(answers) == len(padded) and answers[: len(fresh)] == want
    for answer, request in zip(answers, padded, strict=True):  # as lm-eval's evaluator does
        request.resps.append(answer)
    for request in {id(r): r for r in fresh}.values():
        assert list(request.resps) == [a for a, r in zip(want, fresh) if r is request]


def test_a_request_without_a_stated_repeat_count_is_never_taken_for_padding(toy_path):
    from lm_eval.api.instance import Instance

    request = Instance("generate_until", {}, ("def add(a, b):", {"until": ["\n\n"], "max_gen_toks": 4}), 0,
                       ("toy", 0, None))
    lm = make_lm(toy_path, sigma_scale=2.0)
    first, second = lm.generate_until([request, request])
    assert first != second  # two occurrences, two noise draws
    assert not hasattr(request.resps, "limit")
