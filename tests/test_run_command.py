"""`lm-eval-noise run` never ends with its results lost, and says what is wrong in one line
before anything loads (issue 28, items 3 and 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
from test_cli import run_cli, task_dir  # noqa: F401 - task_dir is a fixture

from lm_eval_noise.cli import main
from lm_eval_noise.cli import run as run_command
from lm_eval_noise.errors import InputError

MODEL = ["--model", "hf", "--model_args", "pretrained=/nonexistent", "--tasks", "humaneval_noise",
         "--confirm_run_unsafe_code"]


@pytest.mark.parametrize("output", ["a_file/results", "a_file/deeper/x.json"])
def test_an_output_path_under_a_file_is_refused_before_anything_runs(tmp_path, output, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    assert main(["run", *MODEL, "--output_path", str(tmp_path / output)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a_file is a file, not a folder" in err, err


def test_an_output_path_through_a_broken_link_is_refused(tmp_path, capsys):
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    assert main(["run", *MODEL, "-o", str(tmp_path / "gone" / "results")]) == 2
    assert "is a broken link" in capsys.readouterr().err


def test_output_paths_that_lm_eval_can_write_pass_the_check(tmp_path):
    for path in (tmp_path / "new" / "folder", tmp_path / "new" / "x.json", tmp_path):
        run_command._check_output_path(str(path))  # raises nothing


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tiny tmpfs: a full disk")
def test_results_that_cannot_be_saved_are_a_failing_exit_not_a_warning(toy_paths, task_dir, tmp_path):  # noqa: F811
    """lm_eval catches the error, warns "Could not save results aggregated" and exited 0
    with everything lost. On a full disk:"""
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(full)], check=True)
    try:
        (full / "filler").write_bytes(b"x" * 4096)  # the one page it has
        command = [str(Path(sys.executable).parent / "lm-eval-noise"), "run", "--model", "hf",
                   "--model_args", f"pretrained={toy_paths['llama']}", "--tasks", "toy_gen",
                   "--include_path", str(task_dir), "--device", "cpu", "--output_path", str(full / "out")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    finally:
        subprocess.run(["umount", str(full)], check=True)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "lm-eval-noise run: lm_eval could not save what it computed" in done.stderr.splitlines()[-1]


class _Manager:
    """A stand-in for lm_eval's TaskManager: `package` names without lm_eval's own tasks,
    `everything` with them."""

    package = ("humaneval_noise", "humaneval_noise_greedy", "lmsys_chat_noise")
    everything = (*package, "hellaswag", "arc_easy", "mbpp", "humaneval")
    inits: ClassVar[list[bool]] = []

    def __init__(self, verbosity=None, include_path=None, include_defaults=True, metadata=None):
        self.inits.append(include_defaults)
        self.include_path = include_path
        self.all_tasks = list(self.everything if include_defaults else self.package)

    def match_tasks(self, names):
        return [name for name in names if name in self.all_tasks]


@pytest.mark.parametrize("requested, indexed", [
    (["humaneval_noise"], [False]),  # ours only: lm_eval's thousands are never read
    (["humaneval_noise", "lmsys_chat_noise"], [False]),
    (["humaneval_noise", "hellaswag"], [False, True]),  # one of lm_eval's: everything
    ([], [True]),  # nothing named: as lm_eval does
])
def test_lm_eval_indexes_its_own_tasks_only_when_a_requested_one_needs_them(requested, indexed):
    _Manager.inits = []
    init = run_command._with_package_tasks(_Manager.__init__, requested)
    manager = _Manager.__new__(_Manager)
    init(manager, include_path="/mine")
    assert _Manager.inits == indexed
    assert manager.include_path[1:] == ["/mine"]  # ours first, the user's after


def test_a_task_typo_is_one_line_with_the_closest_names():
    _Manager.inits = []
    init = run_command._with_package_tasks(_Manager.__init__, ["humaneval_nosie", "helaswag"])
    with pytest.raises(InputError) as raised:
        init(_Manager.__new__(_Manager))
    assert str(raised.value) == ("unknown task 'humaneval_nosie'; closest: humaneval_noise, humaneval_noise_greedy, "
                                 "humaneval; unknown task 'helaswag'; closest: hellaswag")


def test_package_tasks_are_found_without_lm_evals_index():
    from lm_eval.tasks import TaskManager

    manager = TaskManager.__new__(TaskManager)
    run_command._with_package_tasks(TaskManager.__init__, ["humaneval_noise_instruct"])(manager)
    assert "humaneval_noise_instruct" in manager.all_tasks and "hellaswag" not in manager.all_tasks


def test_run_help_shows_runs_own_flags_and_indexes_nothing():
    done = subprocess.run([str(Path(sys.executable).parent / "lm-eval-noise"), "run", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "--output_path" in done.stdout and "--tasks" in done.stdout and "--model_args" in done.stdout
    assert "indexing" not in done.stderr + done.stdout


def test_ctrl_c_is_one_line_and_the_shells_exit_code(monkeypatch, capsys):
    def interrupted(argv, known):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_command, "_run_lm_eval", interrupted)
    assert main(["run", *MODEL]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted" in err


def test_a_package_task_runs_end_to_end_without_the_index(toy_paths, tmp_path):
    """The fast path is the real one: a humaneval_noise run never prints the indexing note."""
    command = [str(Path(sys.executable).parent / "lm-eval-noise"), "run", "--model", "hf",
               "--model_args", f"pretrained={toy_paths['llama']}", "--tasks", "humaneval_noise_greedy",
               "--device", "cpu", "--limit", "1", "--confirm_run_unsafe_code", "--output_path", str(tmp_path),
               "--gen_kwargs", "max_gen_toks=8"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "indexing" not in done.stderr
    results = json.loads(next(tmp_path.rglob("results_*.json")).read_text())
    assert "humaneval_noise_greedy" in results["results"]


@pytest.mark.parametrize("argv, message", [
    (["--model", "hf-noise", "--model_args", "pretrained=/nonexistent,dtpye=float32", "--tasks", "lmsys_chat_noise"],
     "hf-noise: unknown model argument dtpye='float32': did you mean dtype?"),
    (["--model", "hf", "--model_args", "pretrained=/nonexistent,sigma_scale=0.1", "--tasks", "lmsys_chat_noise"],
     "sigma_scale=0.1 is a noise argument, which --model hf does not take: use --model hf-noise (or vllm-noise)"),
    (["--model", "hf-noise", "--model_args", "pretrained=/nonexistent", "--tasks", "lmsys_chat_noise,humaneval_noise"],
     "humaneval_noise runs the generated code (in this package's sandbox): add --confirm_run_unsafe_code"),
])
def test_first_hour_mistakes_are_one_line_before_anything_loads(argv, message, capsys):
    """Each was a traceback of 44-51 lines, after the model had loaded."""
    assert main(["run", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lm-eval-noise run: {message} (--debug before run for the traceback)"], err


def test_legitimate_from_pretrained_arguments_pass_the_typo_check():
    run_command._check_hflm_names({"pretrained": "x", "attn_implementation": "eager", "dtype": "float32",
                                   "sigma_scale": 0.1, "low_cpu_mem_usage": True})
