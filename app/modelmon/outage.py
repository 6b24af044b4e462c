"""Broker outages as the worker's watchdog sees them (pure: no Kafka or Faust import).

While the broker does not answer, nothing moves: no input arrives, no commit lands, table recovery
waits. A stall then is the outage itself, and restarting cannot help (a fresh process would first have
to reach the broker). Once the broker answers again, Faust's clients need a few seconds to reconnect,
rejoin the group and fetch, so a stall is measured from the moment the broker came back, never from
progress made before the outage.
"""

from __future__ import annotations


class OutageClock:
    """Tracks the broker's reachability, as observed by the watchdog, and when it last came back."""

    def __init__(self) -> None:
        self.down_since: float | None = None  # first failed check of the current outage
        self.back_at: float | None = None  # first answered check after the last outage
        self.outages = 0  # outages seen (each counted once, when it began)

    @property
    def down(self) -> bool:
        """True while the last check found the broker unreachable."""
        return self.down_since is not None

    def observe(self, reachable: bool, now: float) -> float | None:
        """Record one check at ``now``; when it ends an outage, return how long the broker was away."""
        if not reachable:
            if self.down_since is None:
                self.down_since = now
                self.outages += 1
            return None
        if self.down_since is None:
            return None
        lasted = now - self.down_since
        self.down_since = None
        self.back_at = now
        return lasted

    def since(self, last_progress: float) -> float:
        """Where a stall whose last progress was at ``last_progress`` starts: never before the return."""
        if self.back_at is None:
            return last_progress
        return max(last_progress, self.back_at)
