"""Loss and jitter of a probe's paths to Apple, per port, from a window of its recent connects.

Packet loss does not look like an outage: it shows as scattered connect failures and as
connects that took a SYN retransmission (Linux waits 1 s, then 3 s in all, for a lost SYN).
One result cannot tell that apart from a single bad moment; a window of them can. Each series
(target, port, address family; the direct path only: through a proxy the connect is to the
proxy) keeps its last `window` connect-bearing results (tcp, tls, http, courier), each bad when the
connect failed (refused, unreachable, or a timeout before the connect completed) or took
>= RETRANSMIT_SECONDS. A port's loss ratio is the bad share over its series that connected at
least once in their window: a series that never connects is a block, its own cause in
common/sitestate, and must not read as loss on the port (one firewalled host on 443 is not
33 % loss on 443).

The `loss` finding has hysteresis: a port enters it when its ratio reaches `enter` with at
least MIN_BAD bad connects, and leaves only when the ratio falls below `leave`; so one failure
never starts it, and a ratio wobbling around the threshold does not flap it.

Jitter: the mean absolute difference of consecutive connect times of one series, over the
port's last `window` such differences. A retransmission-sized connect counts as loss, not jitter.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from courierwatch.v1 import courierwatch_pb2 as pb

CONNECTING: Final = frozenset({"tcp", "tls", "http", "courier"})
RETRANSMIT_SECONDS: Final = 0.9  # at least one SYN retransmission (the initial RTO is 1 s)
MIN_BAD: Final = 2  # one failure is never loss, whatever the share
_FAILED_CONNECT: Final = frozenset({pb.OUTCOME_REFUSED, pb.OUTCOME_UNREACHABLE})
_TIMEOUT: Final = pb.OUTCOME_TIMEOUT


@dataclass(frozen=True, slots=True)
class LossThresholds:
    window: int = 20  # connect-bearing results per port
    enter: float = 0.10  # the loss finding starts at this bad share ...
    leave: float = 0.03  # ... and ends below this one

    def __post_init__(self) -> None:
        if not (self.window >= 1 and 0 <= self.leave <= self.enter <= 1):
            raise ValueError(f"loss thresholds need window >= 1 and leave <= enter: {self}")


DEFAULT_LOSS: Final = LossThresholds()


@dataclass(slots=True)
class _Series:
    bad: deque[bool]
    bad_count: int = 0  # it connects (at least once in its window) while below len(bad)
    previous: float | None = None  # the last good connect time, for jitter


@dataclass(slots=True)
class _Port:
    diffs: deque[float]
    bad: int = 0  # over its series that connect
    total: int = 0
    lossy: bool = False

    def ratio(self) -> float:
        return self.bad / self.total if self.total else 0.0


@dataclass(slots=True)
class PathQuality:
    """One probe's windows: each series', and the sums of each port. O(1) per result."""

    series: dict[tuple[str, int, str], _Series] = field(default_factory=dict)
    ports: dict[int, _Port] = field(default_factory=dict)

    def add(self, result: pb.Result, limits: LossThresholds) -> None:
        """Counts one result (in the collector's hot path: kept to plain operations)."""
        if result.check not in CONNECTING or result.via == "proxy":
            return
        phases = result.phases
        connected = phases.HasField("connect")
        outcome = result.outcome
        if outcome in _FAILED_CONNECT or (outcome == _TIMEOUT and not connected):
            bad, seconds = True, 0.0
        elif connected:
            seconds = phases.connect
            bad = seconds >= RETRANSMIT_SECONDS
        else:
            return  # failed before connecting (DNS): says nothing about the path
        number = result.port
        key = (result.target, number, result.address_family)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Series(deque(maxlen=limits.window))
        port = self.ports.get(number)
        if port is None:
            port = self.ports[number] = _Port(deque(maxlen=limits.window))
        window, before = series.bad, series.bad_count
        if before < len(window):  # it connects: take its old share out of the port's sums
            port.bad -= before
            port.total -= len(window)
        if len(window) == window.maxlen and window[0]:
            before -= 1
        window.append(bad)
        series.bad_count = after = before + bad
        if after < len(window):
            port.bad += after
            port.total += len(window)
        if not bad:
            if series.previous is not None:
                port.diffs.append(abs(seconds - series.previous))
            series.previous = seconds
        share = port.bad / port.total if port.total else 0.0
        if not port.lossy:
            port.lossy = share >= limits.enter and port.bad >= MIN_BAD
        elif share < limits.leave:
            port.lossy = False

    def figures(self) -> list[tuple[int, float, float | None]]:
        """(port, loss ratio, jitter seconds or None before two good connects of a series),
        for each port with a series that connects."""
        return [
            (number, port.ratio(), sum(port.diffs) / len(port.diffs) if port.diffs else None)
            for number, port in sorted(self.ports.items())
            if port.total
        ]

    def finding(self) -> str:
        """The loss finding's one line ("" when none holds): each lossy port and its ratio."""
        lossy = [
            f"{number}: {port.ratio():.0%} of {port.total} recent connects failed or "
            "needed a SYN retransmission"
            for number, port in sorted(self.ports.items())
            if port.lossy
        ]
        return "; ".join(lossy)
