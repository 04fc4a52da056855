"""pass@k: the unbiased estimator of Chen et al. (2021), "Evaluating Large Language Models
Trained on Code", section 2.1: 1 - C(n-c, k) / C(n, k), in its numerically stable
product form."""

from __future__ import annotations

import math


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from
    `num_samples` (of which `num_correct` pass) passes. Refuses k > num_samples."""
    if num_samples < 1 or not 0 <= num_correct <= num_samples:
        raise ValueError(f"pass_at_k needs 0 <= num_correct <= num_samples and num_samples >= 1; "
                         f"got num_samples={num_samples}, num_correct={num_correct}")
    if not 1 <= k <= num_samples:
        raise ValueError(f"pass@{k} needs 1 <= k <= num_samples (got num_samples={num_samples})")
    if num_correct == 0:
        return 0.0
    if num_samples - num_correct < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    return 1.0 - math.prod(1.0 - k / i for i in range(num_samples - num_correct + 1, num_samples + 1))
