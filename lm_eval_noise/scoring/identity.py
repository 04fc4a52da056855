"""Are two model references the same weights? Chat answers are judged by their log-prob
under a reference model, and a model judging its own answers rewards its own repetition
loops; so whether the reference is the generator must not depend on spelling: `./m` and
`m`, a symlink, a copy, a hub id and its cached snapshot all name one set of weights.

The rule, in order:
1. the same name, gguf_file and revision (None = "main"): the same;
2. each side's weight files are found as transformers would pick them: the GGUF file if
   gguf_file is given, else the folder's top-level *.safetensors (else
   pytorch_model*.bin); in the local folder (or file) the name points at, else in the
   Hugging Face cache's snapshot of the hub id at its revision, else from the hub's file
   metadata (size and sha256);
3. the same resolved files (realpath): the same; files of different sizes: different;
   else their sha256 decides (a file in the Hugging Face cache is named by its sha256,
   so only copies outside it are read).
When either side's files cannot be found (an uncached hub id with the hub out of reach,
a folder without weight files), identity is undecided: `same` is None, and the callers
count that as NOT independent, saying why. Only byte-identical files are the same: a
re-saved, re-sharded, quantized or fine-tuned copy of a model counts as another model.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Weights:
    """A model as from_pretrained is given it."""

    name: str  # hub id or local path
    gguf_file: str | None = None
    revision: str | None = None

    @classmethod
    def from_model_args(cls, args: dict) -> Weights:
        return cls(str(args["pretrained"]), args.get("gguf_file") or None, args.get("revision") or None)

    def __str__(self) -> str:
        extras = [f"{key}={value}" for key, value in (("gguf_file", self.gguf_file), ("revision", self.revision))
                  if value]
        return " ".join([repr(self.name), *extras])


@dataclass(frozen=True)
class Identity:
    same: bool | None  # None: cannot be told
    reason: str


@dataclass(frozen=True)
class _File:
    size: int
    path: str | None = None  # the resolved file, when it is on this machine
    sha256: str | None = None  # when known without reading the file


def same_weights(a: Weights, b: Weights) -> Identity:
    if (a.name, a.gguf_file, a.revision or "main") == (b.name, b.gguf_file, b.revision or "main"):
        return Identity(True, f"{a}: the same name, gguf_file and revision")
    sides = []
    for side in (a, b):
        found = _weight_files(side)
        if isinstance(found, str):
            return Identity(None, f"cannot tell whether {a} and {b} are the same weights: {found}")
        sides.append(found)
    paths = [{file.path for file in files} for files in sides]
    if paths[0] == paths[1] and None not in paths[0]:
        return Identity(True, f"{a} and {b} are the same files: {', '.join(sorted(paths[0]))}")
    if sorted(f.size for f in sides[0]) != sorted(f.size for f in sides[1]):
        return Identity(False, f"{a} and {b}: weight files of different sizes")
    try:
        hashes = [sorted(map(_sha256, files)) for files in sides]
    except LookupError as error:
        return Identity(None, f"cannot tell whether {a} and {b} are the same weights: {error}")
    if hashes[0] == hashes[1]:
        return Identity(True, f"{a} and {b}: weight files with the same content (sha256)")
    return Identity(False, f"{a} and {b}: weight files with different content (sha256)")


def _weight_files(weights: Weights) -> list[_File] | str:
    """The weight files, or why they cannot be found."""
    local = Path(weights.name).expanduser()
    if local.is_file():  # a weight file named directly
        return [_local_file(local)]
    folder = local if local.is_dir() else _cached_snapshot(weights)
    if folder is not None:
        if weights.gguf_file:
            files = [folder / weights.gguf_file] if (folder / weights.gguf_file).is_file() else []
        else:  # is_file: a partly downloaded cache snapshot holds dangling links
            files = [f for f in sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
                     if f.is_file()]
        if files:
            return [_local_file(f) for f in files]
        if local.is_dir():
            return f"no weight files{f' named {weights.gguf_file}' if weights.gguf_file else ''} in {local}"
    return _hub_files(weights)  # not here, or cached without its weights


def _cached_snapshot(weights: Weights) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(weights.name, revision=weights.revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not a hub id at all, or not cached: both mean "no snapshot here"
        return None


@functools.lru_cache(maxsize=16)  # one question to the hub per model and process
def _hub_files(weights: Weights) -> list[_File] | str:
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(weights.name, revision=weights.revision, files_metadata=True, timeout=10)
    except Exception as error:  # noqa: BLE001 - offline, unreachable, gated, no such repo: undecided, no crash
        return (f"{weights.name!r} is neither a local path nor in the Hugging Face cache, and the hub could not "
                f"be asked ({type(error).__name__})")
    siblings = {s.rfilename: s for s in info.siblings or [] if "/" not in s.rfilename}
    if weights.gguf_file:
        names = [weights.gguf_file] if weights.gguf_file in siblings else []
    else:
        names = sorted(fnmatch.filter(siblings, "*.safetensors")) or sorted(
            fnmatch.filter(siblings, "pytorch_model*.bin"))
    if not names:
        return f"no weight files in hub repo {weights.name!r}"
    return [_File(size=siblings[n].size, sha256=siblings[n].lfs.sha256 if siblings[n].lfs else None) for n in names]


def _local_file(path: Path) -> _File:
    resolved = path.resolve()
    # The Hugging Face cache keeps large files as blobs/<sha256>: their hash is their name.
    cached = resolved.parent.name == "blobs" and re.fullmatch("[0-9a-f]{64}", resolved.name)
    return _File(size=resolved.stat().st_size, path=str(resolved), sha256=resolved.name if cached else None)


def _sha256(file: _File) -> str:
    if file.sha256:
        return file.sha256
    if file.path is None:
        raise LookupError("the hub lists a weight file without its sha256")
    stat = Path(file.path).stat()
    return _hash_file(file.path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file; size and mtime in the key so that a rewritten file is hashed again."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
