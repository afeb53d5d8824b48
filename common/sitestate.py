"""One site state with its causes, from a probe's latest results: the only place that decides.

The collector computes it for /metrics, the status page and /api/status (and so for the alert
rules, which read those series); `courierwatch check` computes it from its one run. Pure: results
and group facts in, a SiteState out.

States, worst first (the worst cause decides the colour):

    unreachable   Apple cannot be reached: no courier answers on any direct port for a network
                  or DNS reason (the real outage), or no check of a critical service group works
    intercepted   TLS to Apple is inspected: a chain from an issuer Apple does not use
    filtered      a DNS filter or hijack answers Apple's names with addresses that are not Apple's
    degraded      push works, but something a site needs does not: the cause says what
    ok            nothing wrong

`probe_offline` is the collector's word (no live stream for its staleness): it is not derived
from results. A critical group with some checks working, or a non-critical group failing, is
`degraded` (group_down): the state says how bad, the cause and group say what.

Precedence: a courier failure explained by filtering or interception is that finding, never
`unreachable` as well, so the outage page does not fire beside the true cause. A direct path
that is lost while the proxy path works is `unreachable` (devices dial the couriers themselves
unless set to use a proxy) with a `proxy_path` cause naming the proxy as the way that works.
When every courier path is filtered or intercepted, push is effectively blocked: the cause's
detail says both ("push is blocked: ..."), and its state stays `filtered`/`intercepted`.
Several causes hold at once; each is reported (one series each on /metrics).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from courierwatch.common.results import FALLBACK_PORT, outcome_label
from courierwatch.v1 import courierwatch_pb2 as pb

OK: Final = "ok"
DEGRADED: Final = "degraded"
FILTERED: Final = "filtered"
INTERCEPTED: Final = "intercepted"
UNREACHABLE: Final = "unreachable"
PROBE_OFFLINE: Final = "probe_offline"
# Worst last: a state's index is its severity.
STATES: Final = (OK, DEGRADED, FILTERED, INTERCEPTED, UNREACHABLE, PROBE_OFFLINE)

# Causes, by the state they put the site in.
COURIERS_UNREACHABLE: Final = "couriers_unreachable"  # unreachable
GROUP_DOWN: Final = "group_down"  # unreachable for a critical group, degraded for another
DNS_FILTER: Final = "dns_filter"  # filtered: sinkholed answers (0.0.0.0, ::, loopback)
DNS_HIJACK: Final = "dns_hijack"  # filtered: answers outside Apple's or public addresses
TLS_INSPECTION: Final = "tls_inspection"  # intercepted
FALLBACK_ONLY: Final = "fallback_only"  # degraded: 5223 fails, 443 works
NO_FALLBACK: Final = "no_fallback"  # degraded: 5223 works, 443 fails
IPV6_BROKEN: Final = "ipv6_broken"  # degraded: works over IPv4, fails over IPv6
LOSS: Final = "loss"  # degraded: connects fail or retransmit (the collector's window)
CLOCK_SKEW: Final = "clock_skew"  # degraded: the NTP offset passes the threshold
PROVIDER_API_H2: Final = "provider_api_h2"  # degraded: the provider API lost HTTP/2
PROXY_PATH: Final = "proxy_path"  # degraded: the proxy path fails, or only it works
PROBE_DOWN: Final = "probe_down"  # probe_offline

_FILTER_OUTCOMES: Final = {pb.OUTCOME_DNS_SINKHOLE: DNS_FILTER, pb.OUTCOME_DNS_HIJACK: DNS_HIJACK}
_DNS_FAILURES: Final = frozenset(
    {
        pb.OUTCOME_DNS_NXDOMAIN,
        pb.OUTCOME_DNS_TIMEOUT,
        pb.OUTCOME_DNS_SERVFAIL,
        pb.OUTCOME_DNS_NO_ADDRESS,
        pb.OUTCOME_DNS_UNREACHABLE,
        pb.OUTCOME_DNS_REFUSED,
    }
)
_PUSH: Final = "push"
_PROVIDER: Final = "push_provider"


@dataclass(frozen=True, slots=True, order=True)
class Cause:
    state: str  # one of STATES but ok
    cause: str  # one of the cause names above
    group: str = ""  # the service group it concerns
    detail: str = ""  # one line: what was seen

    @property
    def severity(self) -> int:
        return STATES.index(self.state)


@dataclass(frozen=True, slots=True)
class SiteState:
    causes: tuple[Cause, ...]  # worst first

    @property
    def state(self) -> str:
        return self.causes[0].state if self.causes else OK


def offline() -> SiteState:
    return SiteState((Cause(PROBE_OFFLINE, PROBE_DOWN, detail="the probe has no live stream"),))


def assess(
    results: Iterable[pb.Result],
    critical: Mapping[str, bool],
    *,
    loss: str = "",
    proxy: str = "",
) -> SiteState:
    """The site's state from one probe's latest results.

    critical: group id -> whether the group is critical (the probe's group facts; a group not
    in it counts as critical, as the catalog rules for a config's own groups). loss: the
    collector's loss finding for this probe ("" when none), which needs a window of results
    and so cannot come from the latest ones. proxy: the proxy's address, to name it."""
    latest = list(results)
    explained: set[int] = set()  # ids of results a specific cause already accounts for
    # The couriers first: where they and another check name the same cause, theirs is kept.
    causes = [
        *_couriers(latest, explained, proxy),
        *_filtering_and_interception(latest, explained),
        *_families(latest, explained),
        *_single_results(latest, explained),
        *_groups(latest, explained, critical),
    ]
    if loss:
        causes.append(Cause(DEGRADED, LOSS, "", loss))
    unique: dict[tuple[str, str, str], Cause] = {}
    for cause in causes:
        unique.setdefault((cause.state, cause.cause, cause.group), cause)  # one series each
    return SiteState(tuple(sorted(unique.values(), key=lambda c: (-c.severity, c.cause, c.group))))


# A cause beside those above, filtered: the site's DNS filter blocked Apple names that its
# devices asked for (a dns_clients pass over the Pi-hole's log: it hits the devices, where the
# probe's own lookups may pass, e.g. a Pi-hole that exempts its own host).
CLIENT_DNS_FILTER: Final = "client_dns_filter"
_CLIENTS_CHECK: Final = "dns_clients"


def filter_cause(result: pb.Result) -> str | None:
    """The filtered cause a result shows (dns_filter, dns_hijack, client_dns_filter), if any:
    for the readiness report, whose fixes for a cause are those of the results that show it."""
    if result.outcome not in _FILTER_OUTCOMES:
        return None
    return CLIENT_DNS_FILTER if result.check == _CLIENTS_CHECK else _FILTER_OUTCOMES[result.outcome]


def _filtering_and_interception(results: Sequence[pb.Result], explained: set[int]) -> list[Cause]:
    found: dict[tuple[str, str, str], list[pb.Result]] = defaultdict(list)
    for result in results:
        if id(result) in explained:
            continue
        if cause := filter_cause(result):
            found[(FILTERED, cause, result.group)].append(result)
        elif result.outcome == pb.OUTCOME_TLS_INTERCEPTED:
            found[(INTERCEPTED, TLS_INSPECTION, result.group)].append(result)
        else:
            continue
        explained.add(id(result))
    return [Cause(state, cause, group, _seen(members)) for (state, cause, group), members
            in found.items()]  # fmt: skip


def _seen(members: Sequence[pb.Result]) -> str:
    """The first host and what it got (the inspecting issuer, or the detail), and how many more."""
    first = members[0]
    intercepted = first.outcome == pb.OUTCOME_TLS_INTERCEPTED and first.tls.issuer
    what = f"issued by {first.tls.issuer}" if intercepted else first.detail
    detail = f"{_host(first)}: {what}" if what else _host(first)
    hosts = {_host(r) for r in members} - {_host(first)}
    return detail + (f" (and {len(hosts)} more)" if hosts else "")


def _couriers(results: Sequence[pb.Result], explained: set[int], proxy: str) -> list[Cause]:
    couriers = [r for r in results if r.check == "courier"]
    direct = [r for r in couriers if r.via != "proxy"]
    proxied = [r for r in couriers if r.via == "proxy"]
    if not direct and not proxied:
        return []
    primary = [r for r in direct if r.port != FALLBACK_PORT]
    fallback = [r for r in direct if r.port == FALLBACK_PORT]
    primary_ok, fallback_ok = _works(primary), _works(fallback)
    proxy_ok = _works(proxied)
    via = f"the proxy {proxy}" if proxy else "the proxy"
    causes = []
    blocked = [r for r in direct if r.outcome in _FILTER_OUTCOMES]
    inspected = [r for r in direct if r.outcome == pb.OUTCOME_TLS_INTERCEPTED]
    down = bool(direct) and not primary_ok and not fallback_ok
    # Filtering and interception of a courier are those findings, whatever else holds.
    prefix = "push is blocked: " if down else ""
    if inspected:
        causes.append(Cause(INTERCEPTED, TLS_INSPECTION, _PUSH, prefix + _seen(inspected)))
    if blocked:
        cause = _FILTER_OUTCOMES[blocked[0].outcome]
        causes.append(Cause(FILTERED, cause, _PUSH, prefix + _seen(blocked)))
    for r in direct:
        explained.add(id(r))  # the courier causes here speak for every courier result
    if down:
        if blocked or inspected:
            pass  # said above, and never an outage page beside the true cause
        else:
            # Devices dial the couriers themselves unless told to use a proxy: for them this is
            # the outage, even when the proxy path works (which is then a finding of its own).
            causes.append(Cause(UNREACHABLE, COURIERS_UNREACHABLE, _PUSH, _why(direct)))
            if proxy_ok:
                causes.append(
                    Cause(DEGRADED, PROXY_PATH, _PUSH,
                          f"couriers answer only through {via}: only devices set to use it "
                          "(by hand, MDM or PAC) get push")
                )  # fmt: skip
    elif primary and not primary_ok and not _filtered_or_inspected(primary):
        causes.append(Cause(DEGRADED, FALLBACK_ONLY, _PUSH, _why(primary) + "; 443 works"))
    elif fallback and not fallback_ok and primary_ok and not _filtered_or_inspected(fallback):
        causes.append(Cause(DEGRADED, NO_FALLBACK, _PUSH, "443 fallback: " + _why(fallback)))
    # A courier port that never works through the proxy: refused (403), or credentials wanted
    # (apsd has none to give).
    by_port: dict[int, list[pb.Result]] = defaultdict(list)
    for r in proxied:
        by_port[r.port].append(r)
    broken = [r for members in by_port.values() if not _works(members) for r in members]
    if broken:
        causes.append(
            Cause(DEGRADED, PROXY_PATH, _PUSH,
                  f"devices that need {via} cannot get push: {_why(broken)}")
        )  # fmt: skip
    for r in proxied:
        explained.add(id(r))
    return causes


def _families(results: Sequence[pb.Result], explained: set[int]) -> list[Cause]:
    """A check that works over IPv4 and fails over IPv6: one cause per group naming the hosts."""
    if not any(r.address_family == "ipv6" for r in results):
        return []  # an IPv4-only site (most), at a fifth of the cost of grouping its results
    by_series: dict[tuple[str, int, str], dict[str, list[pb.Result]]] = defaultdict(dict)
    for r in results:
        if r.outcome in _FILTER_OUTCOMES or r.outcome == pb.OUTCOME_TLS_INTERCEPTED:
            continue  # that finding, not the family, is what is wrong
        if r.address_family and r.via != "proxy":
            by_series[(r.target, r.port, r.check)].setdefault(r.address_family, []).append(r)
    broken: dict[str, list[pb.Result]] = defaultdict(list)
    for families in by_series.values():
        v4, v6 = families.get("ipv4", []), families.get("ipv6", [])
        if v4 and v6 and _works(v4) and not _works(v6):
            for r in v6:
                broken[r.group].append(r)
    causes = []
    for group, members in broken.items():
        for r in members:
            explained.add(id(r))
        hosts = sorted({f"{_host(r)}:{r.port}" for r in members})
        more = f" and {len(hosts) - 3} more" if len(hosts) > 3 else ""
        causes.append(
            Cause(DEGRADED, IPV6_BROKEN, group,
                  f"works over IPv4, fails over IPv6: {', '.join(hosts[:3])}{more}")
        )  # fmt: skip
    return causes


def _single_results(results: Sequence[pb.Result], explained: set[int]) -> list[Cause]:
    causes = []
    for r in results:
        if id(r) in explained:
            continue
        if r.outcome == pb.OUTCOME_CLOCK_SKEW:
            causes.append(Cause(DEGRADED, CLOCK_SKEW, r.group, f"{_host(r)}: {r.detail}"))
        elif r.outcome == pb.OUTCOME_TLS_ALPN_MISMATCH and r.group == _PROVIDER:
            causes.append(Cause(DEGRADED, PROVIDER_API_H2, r.group, f"{_host(r)}: {r.detail}"))
        elif r.via == "proxy" and r.outcome != pb.OUTCOME_OK:
            causes.append(Cause(DEGRADED, PROXY_PATH, r.group,
                                f"through the proxy, {_host(r)}:{r.port}: {r.detail}"))  # fmt: skip
        else:
            continue
        explained.add(id(r))
    return causes


def _groups(
    results: Sequence[pb.Result], explained: set[int], critical: Mapping[str, bool]
) -> list[Cause]:
    """A group with failures no other cause explains: `unreachable` when it is critical and
    none of its checks works, `degraded` when it is not critical or still partly works."""
    failing: dict[str, list[pb.Result]] = defaultdict(list)
    working: set[str] = set()
    couriers = any(r.check == "courier" for r in results)
    for r in results:
        if couriers and r.group == _PUSH:
            continue  # the couriers speak for the push group
        if r.outcome == pb.OUTCOME_OK:
            working.add(r.group)
        elif id(r) not in explained:
            failing[r.group].append(r)
    return [
        Cause(UNREACHABLE if critical.get(group, True) and group not in working else DEGRADED,
              GROUP_DOWN, group, _why(members))
        for group, members in failing.items()
    ]  # fmt: skip


def _filtered_or_inspected(results: Sequence[pb.Result]) -> bool:
    """Whether every failure among `results` is filtering or interception (their own cause)."""
    return all(r.outcome in _FILTER_OUTCOMES or r.outcome == pb.OUTCOME_TLS_INTERCEPTED
               for r in results if r.outcome != pb.OUTCOME_OK)  # fmt: skip


def _works(results: Sequence[pb.Result]) -> bool:
    return any(r.outcome == pb.OUTCOME_OK for r in results)


def _host(result: pb.Result) -> str:
    return result.dialled_host or result.target


def _why(failed: Sequence[pb.Result]) -> str:
    """`5223 refused (3 of 3), 443 timeout` style: what failed, by port and outcome."""
    by: dict[tuple[int, str], int] = defaultdict(int)
    for r in failed:
        if r.outcome != pb.OUTCOME_OK:
            by[(r.port, outcome_label(r.outcome))] += 1
    first = failed[0]
    parts = [f"{port} {label}" + (f" ({n}x)" if n > 1 else "") for (port, label), n in by.items()]
    kind = "DNS: " if all(r.outcome in _DNS_FAILURES for r in failed) else ""
    return f"{kind}{_host(first)}: " + ", ".join(parts)
