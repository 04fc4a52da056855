"""Tools over models and logged runs, each a library the `cli` subcommands call:
reference scoring of logged answers (score), residual covariance (covariance), noise
vectors of a run (vectors), the HTML viewer (viz) and sweeps (sweep/), all reading
lm-eval's `--log_samples` files through samples.py."""
