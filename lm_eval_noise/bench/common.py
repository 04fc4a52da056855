"""What the model benchmarks share: a randomly initialised Llama-style model of realistic
width, chosen on the command line (--hidden, --layers, --vocab, --device, --dtype)."""

from __future__ import annotations

import torch


def build_bench_model(args):
    """(model, tokenizer) for the parsed arguments."""
    from ..demo.toymodels import build_model, build_tokenizer

    model = build_model(
        "llama", vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
        num_heads=max(1, args.hidden // 64), max_positions=2048,
    ).to(device=args.device, dtype=getattr(torch, args.dtype))
    return model, build_tokenizer()


def timed_rounds(runs: dict, rounds: int, progress: str | None = None) -> tuple[dict, dict]:
    """Each callable of `runs` once per round, the order reversed every other round (so
    neither always runs second): ({name: [seconds per round]}, {name: last result})."""
    import time

    from tqdm import tqdm

    seconds = {name: [] for name in runs}
    results = {}
    for round_index in tqdm(range(rounds), desc=progress, disable=progress is None):
        for name in list(runs) if round_index % 2 == 0 else list(runs)[::-1]:
            start = time.perf_counter()
            results[name] = runs[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds, results


def print_rates(seconds: dict, tokens: int, baseline: str, width: int, ratio_header: str) -> None:
    """tokens/s (median over rounds) of each run and its ratio to `baseline`'s."""
    import statistics

    base = tokens / statistics.median(seconds[baseline])
    print(f"{'model':<{width}}{'tokens/s':>12}{ratio_header:>{len(ratio_header) + 2}}")
    for name, times in seconds.items():
        rate = tokens / statistics.median(times)
        print(f"{name:<{width}}{rate:>12.1f}{rate / base:>{len(ratio_header) + 2}.3f}")


class OperationCounter:
    """Counts the torch operations dispatched inside the block."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                counter.count += 1
                return func(*args, **(kwargs or {}))

        self.count, self._mode = 0, Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)
