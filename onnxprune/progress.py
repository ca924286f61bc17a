"""A one-line progress indicator on stderr, shown only to a person at a terminal (never
in pipes, logs or tests, which keep stderr for the one-line errors)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.label, self.done = total, label, 0
        self.enabled = (self.stream.isatty() if enabled is None else enabled) and total > 1
        self._last = 0.0
        self._width = 0

    def step(self, n: int = 1, note: str = "") -> None:
        """Advance by ``n``; ``note`` (e.g. the current loss) follows the count."""
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            line = f"{self.label} {self.done}/{self.total}" + (f"  {note}" if note else "")
            self.stream.write("\r" + line.ljust(self._width))
            self._width = max(self._width, len(line))
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * max(self._width, len(self.label) + 2 * len(str(self.total)) + 2) + "\r")
            self.stream.flush()
