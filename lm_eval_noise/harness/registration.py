"""Make stock `lm_eval --model hf-noise` work with lm-eval 0.4.13, which has no plugin discovery.

The wheel installs `lm_eval_noise.pth`, which imports this module at interpreter start.
It imports nothing heavy: it adds a meta-path finder that waits until `lm_eval.models`
has been imported (that import registers the built-in models) and then registers lazy
placeholders for `hf-noise` and `vllm-noise` (whose module imports vLLM only when
used). Registering any earlier would make the registry non-empty, and
`lm_eval.api.registry.get_model` would then skip importing the built-ins, so
`--model hf` would vanish.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

# Each target must equal f"{cls.__module__}:{cls.__name__}" of the decorated class, or
# the registry refuses the upgrade from placeholder to class.
PLACEHOLDERS = {
    "hf-noise": "lm_eval_noise.harness.model:HFNoiseLM",
    "vllm-noise": "lm_eval_noise.harness.vllm_model:VLLMNoiseLM",
}
_WATCHED = "lm_eval.models"


def register_placeholder() -> None:
    from lm_eval.api.registry import model_registry

    for name, target in PLACEHOLDERS.items():
        if name not in model_registry:
            model_registry.register(name, target=target)


class _AfterModelsImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _WATCHED:
            return None
        sys.meta_path.remove(self)  # one-shot; also lets find_spec below skip us
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_then_register(module):
            run_module(module)
            register_placeholder()

        spec.loader.exec_module = exec_then_register
        return spec


def install() -> None:
    if _WATCHED in sys.modules:
        register_placeholder()
    elif not any(isinstance(f, _AfterModelsImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterModelsImport())


install()
