"""The lm-eval adapter: `hf-noise` (model.py), the seed of each request (seeding.py),
bitsandbytes quantization, registration with lm-eval (registration.py, run at
interpreter start by lm_eval_noise.pth) and where the task YAMLs are (task_configs.py).

Kept import-free: registration.py runs in every interpreter of the environment.
"""
