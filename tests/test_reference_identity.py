"""Is the chat reference the generator? Decided by the identity of the weights
(scoring.identity), never by how the model is spelled; recorded by the lmsys task per doc
and read back by the sweep's verdict."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from lm_eval_noise.errors import InputError
from lm_eval_noise.scoring.identity import Weights, same_weights
from lm_eval_noise.scoring.self_scoring import (
    SELF_SCORED_KEY,
    SELF_SCORING_KEY,
    judged_self_scored,
    recorded_self_scoring,
)


def _model(folder: Path, content: bytes = b"weights-a", name: str = "model.safetensors") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
    (folder / "config.json").write_text("{}")
    return folder


def _same(a, b):
    return same_weights(a if isinstance(a, Weights) else Weights(str(a)),
                        b if isinstance(b, Weights) else Weights(str(b))).same


def test_spellings_of_one_folder_are_the_same_weights(tmp_path, monkeypatch):
    _model(tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    assert _same("./m", "m") is True
    assert _same("m/", str(tmp_path / "m")) is True
    os.symlink(tmp_path / "m", tmp_path / "link")
    identity = same_weights(Weights("link"), Weights("m"))
    assert identity.same is True and "same files" in identity.reason


def test_a_copy_is_the_same_weights_and_other_bytes_are_not(tmp_path):
    _model(tmp_path / "m")
    shutil.copytree(tmp_path / "m", tmp_path / "copy")
    assert _same(tmp_path / "m", tmp_path / "copy") is True
    _model(tmp_path / "other", b"weights-b")  # same size, other content: the hash decides
    assert _same(tmp_path / "m", tmp_path / "other") is False
    _model(tmp_path / "bigger", b"weights-a, and more")
    assert "different sizes" in same_weights(Weights(str(tmp_path / "m")), Weights(str(tmp_path / "bigger"))).reason


def test_gguf_files_are_told_apart_by_file_not_by_folder(tmp_path):
    folder = _model(tmp_path / "g", b"quant-q4", "a.gguf")
    (folder / "b.gguf").write_bytes(b"quant-q8")
    assert _same(Weights(str(folder), "a.gguf"), Weights(str(folder), "b.gguf")) is False
    os.symlink(folder, tmp_path / "alias")
    assert _same(Weights(str(folder), "a.gguf"), Weights(str(tmp_path / "alias"), "a.gguf")) is True
    # The GGUF file inside a folder is not the folder's safetensors (none here): undecided.
    assert _same(Weights(str(folder), "a.gguf"), Weights(str(folder))) is None


def test_a_folder_without_weights_or_an_unreachable_hub_id_is_undecided(tmp_path):
    (tmp_path / "empty").mkdir()
    _model(tmp_path / "m")
    assert _same(tmp_path / "empty", tmp_path / "m") is None
    identity = same_weights(Weights("nobody/nothing-here"), Weights(str(tmp_path / "m")))  # tests run offline
    assert identity.same is None and "hub could not be asked" in identity.reason
    assert _same("org/model", "org/model") is True  # the same name: nothing to look up
    assert _same(Weights("org/model", revision="main"), Weights("org/model")) is True


def _hub_cache(root: Path, repo: str, content: bytes, commit: str = "0" * 40) -> Path:
    """A Hugging Face cache entry as hf_hub_download leaves it: refs/main, a snapshot of
    links, blobs named by their sha256."""
    entry = root / f"models--{repo.replace('/', '--')}"
    sha = hashlib.sha256(content).hexdigest()
    (entry / "blobs").mkdir(parents=True)
    (entry / "blobs" / sha).write_bytes(content)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(commit)
    snapshot = entry / "snapshots" / commit
    snapshot.mkdir(parents=True)
    os.symlink(f"../../blobs/{sha}", snapshot / "model.safetensors")
    return snapshot


def test_a_hub_id_is_its_cached_snapshot_and_any_copy_of_it(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = _hub_cache(tmp_path / "hub", "org/model", b"hub-weights")
    assert _same("org/model", snapshot) is True
    shutil.copytree(snapshot, tmp_path / "copy")  # links followed: a plain copy, hashed
    assert _same("org/model", tmp_path / "copy") is True
    _model(tmp_path / "other", b"hub-weighTS")
    assert _same("org/model", tmp_path / "other") is False


def test_an_uncached_hub_id_is_compared_by_the_hubs_file_hashes(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from lm_eval_noise.scoring import identity

    content = b"remote-weights"
    lfs = SimpleNamespace(sha256=hashlib.sha256(content).hexdigest())
    siblings = [SimpleNamespace(rfilename="model.safetensors", size=len(content), lfs=lfs),
                SimpleNamespace(rfilename="config.json", size=2, lfs=None)]
    monkeypatch.setattr(HfApi, "model_info", lambda self, *a, **k: SimpleNamespace(siblings=siblings))
    identity._hub_files.cache_clear()
    try:
        assert _same("org/remote", _model(tmp_path / "local", content)) is True
        assert _same("org/remote", _model(tmp_path / "other", b"other-weights!")) is False
    finally:
        identity._hub_files.cache_clear()


# --- what the lmsys task records --------------------------------------------------------


@pytest.fixture(scope="module")
def chats(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("chats") / "chats.jsonl"
    path.write_text(json.dumps({"conversation_id": "a", "language": "English",
                                "conversation": [{"role": "user", "content": "Name a colour."}]}) + "\n")
    return str(path)


def _doc(chats, generator, **metadata):
    from lm_eval_noise.tasks.lmsys import load_lmsys

    return load_lmsys(lmsys_path=chats, pretrained=generator, **metadata)["test"][0]


def test_the_task_records_self_scoring_by_weights(chats, toy_paths, tmp_path, caplog):
    llama = toy_paths["llama"]
    default = _doc(chats, llama)
    assert default[SELF_SCORED_KEY] is True and default[SELF_SCORING_KEY] is True
    os.symlink(llama, tmp_path / "alias")  # another spelling of the generator: still itself
    alias = _doc(chats, llama, reference_model=str(tmp_path / "alias"))
    assert alias[SELF_SCORED_KEY] is True and alias[SELF_SCORING_KEY] is True  # hf-noise reuses its weights
    other = _doc(chats, llama, reference_model=toy_paths["gpt2"])
    assert other[SELF_SCORED_KEY] is False and other[SELF_SCORING_KEY] is False
    assert "different sizes" in other["self_scored_reason"]
    # Another dtype than the generator's: still self-scored, but loaded by name to get that dtype.
    cast = _doc(chats, llama, reference_model=str(tmp_path / "alias"), reference_dtype="bfloat16")
    assert cast[SELF_SCORED_KEY] is True and cast[SELF_SCORING_KEY] is False and cast["reference_dtype"] == "bfloat16"
    with caplog.at_level(logging.WARNING):
        unknown = _doc(chats, llama, reference_model="nobody/nothing-here")
    assert unknown[SELF_SCORED_KEY] is True and unknown[SELF_SCORING_KEY] is False  # scored by that name
    assert "counted as self-scored" in caplog.text


@pytest.mark.parametrize("metadata, message", [
    ({"reference_gguf_file": "m.gguf"}, "reference_gguf_file='m.gguf' needs reference_model"),
    ({"reference_model": "some/model.gguf"}, "reference_model 'some/model.gguf' is a GGUF file: give its folder"),
    ({"reference_model": "org/model", "reference_gguf_file": "m.bin"}, "reference_gguf_file 'm.bin': not a .gguf"),
])
def test_bad_gguf_references_fail_before_any_generation(chats, toy_paths, metadata, message):
    with pytest.raises(InputError, match=message):
        _doc(chats, toy_paths["llama"], **metadata)


def test_a_missing_gguf_file_in_a_local_reference_folder_is_named(chats, toy_paths):
    with pytest.raises(InputError, match=r"reference_gguf_file 'absent.gguf': no such file in "):
        _doc(chats, toy_paths["llama"], reference_model=toy_paths["gpt2"], reference_gguf_file="absent.gguf")


# --- what the sweep's verdict reads -----------------------------------------------------


def _run_dir(root: Path, self_scored) -> Path:
    run = root / "run" / "model"
    run.mkdir(parents=True)
    doc = {"prompt": "hi"} if self_scored is None else {"prompt": "hi", SELF_SCORED_KEY: self_scored}
    (run / "samples_lmsys_chat_noise_x.jsonl").write_text(json.dumps({"doc_id": 0, "doc": doc}) + "\n")
    return root / "run"


def test_the_verdict_uses_what_the_run_recorded_then_the_weights(tmp_path, toy_paths, monkeypatch):
    llama, gpt2 = toy_paths["llama"], toy_paths["gpt2"]
    entry = {"model": llama, "model_args": {"pretrained": llama}}
    independent = _run_dir(tmp_path / "a", False)
    assert recorded_self_scoring(independent) is False
    assert judged_self_scored({**entry, "directory": str(independent)}, llama) is False  # the record wins
    assert judged_self_scored({**entry, "directory": str(_run_dir(tmp_path / "b", True))}, gpt2) is True
    unrecorded = str(_run_dir(tmp_path / "c", None))
    assert recorded_self_scoring(unrecorded) is None
    monkeypatch.chdir(Path(llama).parent)
    assert judged_self_scored({**entry, "directory": unrecorded}, f"./{Path(llama).name}") is True
    assert judged_self_scored({**entry, "directory": unrecorded}, gpt2) is False
    assert judged_self_scored({**entry, "directory": unrecorded}, None) is True  # lmsys's default reference
    assert judged_self_scored({"model": "toy"}, "reference") is True  # undecided: not independent
    assert judged_self_scored({"model": "toy", "self_scored": False}, "reference") is False


def test_judge_sweep_flags_a_generator_that_scores_itself_under_another_name(toy_paths, monkeypatch):
    from lm_eval_noise.tools.sweep import report

    judged = []
    monkeypatch.setattr(report, "judge_runs", lambda runs, limits: judged.append(runs) or {})
    llama = toy_paths["llama"]
    entries = [{"name": name, "group": name, "model": llama, "model_args": {"pretrained": llama},
                "task": "lmsys_chat_noise", "method": name, "temperature": None, "noise_scale": None,
                "per_problem": {}} for name in ("greedy", "noise")]
    monkeypatch.chdir(Path(llama).parent)
    report.judge_sweep(entries, {}, f"./{Path(llama).name}")
    report.judge_sweep(entries, {}, toy_paths["gpt2"])
    assert [[run["self_scored"] for run in runs] for runs in judged] == [[True, True], [False, False]]


# --- --gguf-file on the command line ----------------------------------------------------


@pytest.mark.parametrize("command", ["score", "covariance"])
@pytest.mark.parametrize("flags, message", [
    (["--gguf-file", "weights.bin"], "--gguf-file 'weights.bin': not a .gguf file name"),
    (["--gguf-file", "absent.gguf"], "--gguf-file 'absent.gguf': no such file in "),
    ([], "is a GGUF file: give its folder (or hub repo) as --model and its file name as --gguf-file"),
])
def test_gguf_flag_misuse_is_one_line(command, flags, message, toy_paths, tmp_path, capsys):
    from lm_eval_noise.cli import main

    model = toy_paths["llama"] if flags else str(tmp_path / "model.gguf")
    samples = tmp_path / "samples_x.jsonl"
    samples.write_text(json.dumps({"doc_id": 0, "arguments": {"gen_args_0": {"arg_0": "hi", "arg_1": {}}},
                                   "resps": [["there"]], "filtered_resps": ["there"]}) + "\n")
    extra = ["--samples", str(samples)] if command == "score" else ["--layer", "0", "-o", str(tmp_path / "out")]
    assert main([command, "--model", model, *flags, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
