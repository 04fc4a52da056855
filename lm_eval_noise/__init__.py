"""lm-eval-noise: Gaussian noise injected into frozen Hugging Face LMs, for lm-eval.

Kept import-light on purpose: the `.pth` registration hook imports this package in
every interpreter of the environment, so nothing heavy (torch, lm_eval) loads here.
"""

__version__ = "0.1.0"
