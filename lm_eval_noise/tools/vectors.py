"""The per-sequence noise vector each sample of a run got (`lm-eval-noise vectors`).

Nothing is read from the model: a sample's seed is a function of (noise_seed, the
logged prompt, its repeat index) by the harness's own rule (harness/seeding.py), and the
vector follows from the seed and the noise settings in the results JSON (`config.noise`,
reference norm included, read back by NoiseSpec.from_record). `export_vectors`
returns one row per generated sample (float32) and its index (file, doc_id, repeat,
seed, and with noise_reference=prompt the sample's reference norm). A row, saved alone
as noise_vectors= with noise_norm= its norm, per_sequence scope and the run's
noise_schedule, reproduces that sample's generation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..harness.seeding import generation_seed
from ..noise import NoiseSampler, NoiseSpec
from .samples import generation_samples


def export_vectors(results: dict, sample_files: list[Path]) -> tuple[np.ndarray, list[dict]]:
    record = results["config"].get("noise")
    if not record or not record.get("active"):
        raise InputError("the results JSON records no active hf-noise settings (config.noise)")
    spec = NoiseSpec.from_record(record)
    if spec.scope != "per_sequence":
        raise InputError(f"noise_scope={spec.scope}: only per_sequence runs have one vector per sample")
    rows = []
    for path in sample_files:
        for sample, context, responses in generation_samples(path):
            for repeat in range(len(responses)):
                seed = generation_seed(spec.seed, context, repeat)
                rows.append({"file": path.name, "doc_id": sample.get("doc_id"), "repeat": repeat, "seed": seed})
    sampler = NoiseSampler(spec, record["reference_norm"], record["hidden_size"], torch.device("cpu"))
    seeds = torch.tensor([row["seed"] for row in rows], dtype=torch.int64)
    repeats = torch.tensor([row["repeat"] for row in rows], dtype=torch.int64)
    norms = None
    if spec.reference == "prompt":  # each sample's noise norm follows its own prompt
        recorded = record["prompt_reference_norms"]
        for row in rows:
            row["prompt_reference_norm"] = recorded[str(row["seed"])]
        norms = torch.tensor([row["prompt_reference_norm"] for row in rows]) * record["noise_per_reference"]
    vectors = sampler.sample(seeds, repeats, torch.zeros((len(rows), 1), dtype=torch.int64), norms)[:, 0]
    return vectors.numpy().astype(np.float32), rows
