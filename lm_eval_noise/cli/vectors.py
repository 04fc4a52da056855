"""`lm-eval-noise vectors --results R --samples S...`: the per-sequence noise vector each
sample of a run got, rebuilt from the seeds (nothing is read from the model).

Writes into --output: noise_vectors.npy (one row per generated sample, float32) and
noise_vectors.json (per row: file, doc_id, repeat, seed, and with
noise_reference=prompt the sample's reference norm). A row, saved alone as
noise_vectors= with noise_norm= its norm, per_sequence scope and the run's
noise_schedule, reproduces that sample's generation.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from ..tools.files import write_text


def add_arguments(parser) -> None:
    parser.add_argument("--results", required=True, help="results_*.json of the run")
    parser.add_argument("--samples", nargs="+", required=True, help="its samples_*.jsonl")
    parser.add_argument("-o", "--output", default=".", help="output folder (default: the current one)")


def run(args) -> int:
    import numpy as np

    from ..tools.vectors import export_vectors

    try:
        results = json.loads(Path(args.results).read_text())
        vectors, rows = export_vectors(results, [Path(p) for p in args.samples])
    except KeyError as error:
        raise InputError(f"{args.results}: no {error} in the results JSON; is it a run of hf-noise?") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{args.results}: not a results JSON ({error})") from None
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    np.save(output / "noise_vectors.npy", vectors)
    write_text(output / "noise_vectors.json", json.dumps(rows, indent=1))
    print(f"wrote {len(rows)} vectors of width {vectors.shape[1]} to {output / 'noise_vectors.npy'} "
          f"(index: {output / 'noise_vectors.json'})")
    return 0
