"""The remote-write sender's own metrics, as text format 0.0.4 lines for /metrics.

render() gives whole families (HELP, TYPE, samples), to be written after the state's families.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from courierwatch.collector.remote.send import Rejection

# Upper bounds of the request duration histogram, seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PREFIX = "courierwatch_remote_write_"


class Telemetry:
    def __init__(self, limit: int) -> None:
        self.limit = limit  # samples the queue may hold
        self.queued = 0  # samples held: queued, in flight or being retried
        self.sent = 0  # samples the store answered 2xx for
        self.retries: Counter[str] = Counter()  # requests retried, by reason
        self.failures: Counter[tuple[int, str]] = Counter()  # requests refused for good
        self.rejected: Counter[tuple[int, str]] = Counter()  # their samples
        self._buckets = [0] * (len(BUCKETS) + 1)  # the last: above every bound
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        """One request answered by the store, after `seconds`."""
        self._buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self._sum += seconds

    def reject(self, rejection: Rejection, samples: int) -> None:
        key = (rejection.status, rejection.reason)
        self.failures[key] += 1
        self.rejected[key] += samples

    def render(self) -> str:
        lines = [
            *_header("queue_samples", "gauge",
                     "Samples held for the store: queued, in flight or being retried."),
            f"{PREFIX}queue_samples {self.queued}.0",
            *_header("queue_limit_samples", "gauge",
                     "Samples the queue may hold before writes wait (backpressure)."),
            f"{PREFIX}queue_limit_samples {self.limit}.0",
            *_header("samples_sent_total", "counter", "Samples the store accepted (2xx)."),
            f"{PREFIX}samples_sent_total {self.sent}.0",
            *_header("retries_total", "counter",
                     "Requests retried, by reason: the HTTP status (5xx, 429), timeout or "
                     "connection."),
            *(f'{PREFIX}retries_total{{reason="{reason}"}} {n}.0'
              for reason, n in sorted(self.retries.items())),
            *_header("failures_total", "counter",
                     "Requests the store refused for good (4xx), by status and reason."),
            *_by_rejection("failures_total", self.failures),
            *_header("samples_rejected_total", "counter",
                     "Samples of the requests the store refused for good, by status and reason."),
            *_by_rejection("samples_rejected_total", self.rejected),
            *_header("request_duration_seconds", "histogram",
                     "Time from sending a request to the store's answer."),
        ]  # fmt: skip
        count = 0
        for bound, n in zip((*BUCKETS, "+Inf"), self._buckets, strict=True):
            count += n
            lines.append(f'{PREFIX}request_duration_seconds_bucket{{le="{bound}"}} {count}.0')
        lines.append(f"{PREFIX}request_duration_seconds_sum {self._sum!r}")
        lines.append(f"{PREFIX}request_duration_seconds_count {count}.0")
        return "\n".join(lines) + "\n"


def _header(name: str, kind: str, text: str) -> tuple[str, str]:
    return f"# HELP {PREFIX}{name} {text}", f"# TYPE {PREFIX}{name} {kind}"


def _by_rejection(name: str, counts: Counter[tuple[int, str]]) -> list[str]:
    return [f'{PREFIX}{name}{{reason="{reason}",status="{status}"}} {n}.0'
            for (status, reason), n in sorted(counts.items())]  # fmt: skip
