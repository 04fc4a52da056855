"""A progress bar of generated tokens (tokens/s) that moves at every decoding step.

HFLM's own bar moves once per request, i.e. once per finished batch, which on a CPU can
be minutes apart. transformers calls a streamer's `put` with the prompt once, then with
each step's new tokens, so counting them costs nothing the model would notice.
"""

from __future__ import annotations

from contextlib import contextmanager

from tqdm import tqdm


class TokenCounter:
    """A transformers streamer (put/end) that adds each step's new tokens to a bar."""

    def __init__(self, bar: tqdm):
        self.bar = bar
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        self.bar.update(int(value.numel()))

    def end(self) -> None:
        pass


@contextmanager
def token_progress(disabled: bool):
    """A bar for one generate_until call, or None when progress is off."""
    if disabled:
        yield None
        return
    bar = tqdm(desc="Generated tokens", unit="tok", leave=False, position=1, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
