"""The one "something was dropped" warning policy: at most one warning a
minute, so a process that keeps losing samples or chunks does not flood its
log; what is lost in between is summed into the next warning."""

from __future__ import annotations

import time

DROP_WARNING_INTERVAL_S = 60.0


class DropWarning:
    """Counts losses and says when to warn about them."""

    def __init__(self, interval_s: float = DROP_WARNING_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.unwarned = 0
        self.last_warning: float | None = None  # monotonic time

    def count(self, lost: int) -> int:
        """Adds `lost`; returns how many to warn about now (every loss not
        yet warned about), or 0 while the last warning is too recent."""
        self.unwarned += lost
        now = time.monotonic()
        if self.unwarned <= 0 or (
            self.last_warning is not None and now - self.last_warning < self.interval_s
        ):
            return 0
        told, self.unwarned = self.unwarned, 0
        self.last_warning = now
        return told
