"""Reading lm-eval `--log_samples` files of generate_until tasks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError


def generation_samples(path: Path) -> Iterator[tuple[dict, str, list[str]]]:
    """(sample, the prompt as sent to the model, every repeat's answer) per line; a
    line of another shape is a ValueError naming the file and line."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
                prompt, responses = sample["arguments"]["gen_args_0"]["arg_0"], sample["resps"][0]
            except (ValueError, KeyError, IndexError, TypeError) as error:
                raise InputError(
                    f"{path}:{number}: not a generate_until sample of lm-eval's --log_samples "
                    f"({type(error).__name__}: {error})"
                ) from None
            yield sample, prompt, responses
