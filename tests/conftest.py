"""Shared fixtures: tiny local models (Llama-style untied, GPT-2-style tied), no downloads."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

# Under pytest-xdist each worker gets its share of the cores for torch's threads (and so
# do the processes its tests start): two workers of two threads each on two cores made
# the suite a third slower (13.4 against 10.0 minutes, measured side by side).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

# toymodels.ARCHITECTURES, spelled out here: importing toymodels imports torch and
# transformers (seconds), which most test files never need. toy_paths checks they agree.
TOY_ARCHITECTURES = ("llama", "gpt2")


@pytest.fixture(scope="session")
def toy_paths(tmp_path_factory) -> dict[str, str]:
    from lm_eval_noise.demo.toymodels import ARCHITECTURES, save_toy_model

    assert tuple(ARCHITECTURES) == TOY_ARCHITECTURES
    root = tmp_path_factory.mktemp("toy_models")
    return {arch: str(save_toy_model(root / arch, arch)) for arch in ARCHITECTURES}


@pytest.fixture(params=TOY_ARCHITECTURES)
def toy_path(request, toy_paths) -> str:
    return toy_paths[request.param]


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """A temp root of this test's own, so other work on the machine (other sandboxes,
    other processes) cannot be mistaken for a sandbox test's leftovers."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root
