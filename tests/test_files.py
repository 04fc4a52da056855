"""Files are written whole or not at all, and a full disk is one line (issue 28, item 3:
a full disk was a 47-line traceback that left a truncated PNG behind)."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from lm_eval_noise.cli import main
from lm_eval_noise.tools.files import replace_atomically, write_text


def _half_then_full(path):
    path.write_text("half of it")
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    target = tmp_path / "leaderboard.json"
    write_text(target, "the old, complete leaderboard")
    with pytest.raises(OSError):
        replace_atomically(target, _half_then_full)
    assert target.read_text() == "the old, complete leaderboard"
    assert [p.name for p in tmp_path.iterdir()] == ["leaderboard.json"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tiny tmpfs: a full disk")
def test_on_a_full_disk_a_report_file_is_left_whole_or_absent(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(full)], check=True)
    board = "x" * 8192
    try:
        (full / "filler").write_bytes(b"x" * 12 * 1024)
        with pytest.raises(OSError) as plain:  # what the report did: a truncated leaderboard
            (full / "plain.json").write_text(board)
        truncated = (full / "plain.json").stat().st_size
        (full / "plain.json").unlink()
        with pytest.raises(OSError) as ours:
            write_text(full / "leaderboard.json", board)
        left = sorted(p.name for p in full.iterdir())
    finally:
        subprocess.run(["umount", str(full)], check=True)
    assert plain.value.errno == ours.value.errno == errno.ENOSPC
    assert 0 < truncated < len(board)
    assert left == ["filler"]


def test_a_full_disk_is_one_line_from_any_command(monkeypatch, capsys):
    from lm_eval_noise.cli import tasks

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/out/plot.png")

    monkeypatch.setattr(tasks, "run", full)
    assert main(["tasks"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lm-eval-noise tasks: cannot write /out/plot.png: No space left on device; nothing half-written "
                   "was left (--debug for the traceback)"], err
