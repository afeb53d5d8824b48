"""What one run of the checks means for a site: per Apple service, works or not, and what to do.

Pure: results in, an assessment out (courierwatch.probe.oneshot.report prints it). Each failure gets
one action item, chosen by its outcome and its service group, written for whoever runs the site's
firewall, DNS filter or proxy. An action is a template with one subject (a host, a domain, a range),
so that the same fix for many hosts is one to-do naming them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from courierwatch.common.results import FALLBACK_PORT, courier_state, outcome_label
from courierwatch.probe import catalog
from courierwatch.v1 import courierwatch_pb2 as pb

# Groups whose hosts live in Apple's own address space: rules can name the range and the domain.
_APNS: Final = frozenset({"push", "push_provider"})
_APNS_DOMAIN: Final = "*.push.apple.com"
_APPLE_V4: Final = "17.0.0.0/8"
_NAMED: Final = 3  # subjects a merged to-do names before "and N more"
# By outcome: the template, and whether its subject is the name asked (else the rule's scope).
_DNS_ACTIONS: Final = {
    pb.OUTCOME_DNS_NXDOMAIN: ("the resolver cannot find {}: check DNS forwarding and filters", 1),
    pb.OUTCOME_DNS_NO_ADDRESS: ("the resolver has no address for {}: check DNS filters", 1),
    pb.OUTCOME_DNS_SERVFAIL: ("the resolver fails for {}: check its upstream and DNSSEC", 1),
    pb.OUTCOME_DNS_TIMEOUT: ("the resolver does not answer for {}: check the DNS servers", 1),
    pb.OUTCOME_DNS_UNREACHABLE: (
        "no resolver can be reached for {}: check the nameserver addresses, the route to them"
        " and that UDP and TCP port 53 to them are open",
        1,
    ),
    pb.OUTCOME_DNS_REFUSED: (
        "the resolver refuses queries for {}: check its access list (allow-query,"
        " access-control) and any DNS policy that blocks the name",
        1,
    ),
    pb.OUTCOME_DNS_SINKHOLE: ("allow {} in the DNS filter", 0),
    pb.OUTCOME_DNS_HIJACK: ("stop rewriting {} in DNS: devices need Apple's addresses", 0),
}
_BLOCKED: Final = frozenset(
    {pb.OUTCOME_REFUSED, pb.OUTCOME_TIMEOUT, pb.OUTCOME_UNREACHABLE, pb.OUTCOME_RESET}
)
_APSD_PROXY: Final = (
    "the proxy needs credentials: apsd cannot use an authenticated proxy; allow 5223 direct"
)


@dataclass(frozen=True, slots=True)
class Action:
    template: str  # "{}" marks where the subject goes (if anywhere)
    subject: str = ""

    @property
    def text(self) -> str:
        return self.template.format(self.subject)


def action(result: pb.Result) -> Action:
    """The one thing to change so that this check works (for a failed result)."""
    outcome, group = result.outcome, result.group
    apns = group in _APNS
    scope = _APNS_DOMAIN if apns else result.target
    endpoint = f"{result.target}:{result.port}"
    if outcome in _DNS_ACTIONS:
        template, by_name = _DNS_ACTIONS[outcome]
        return Action(template, (result.dialled_host or result.target) if by_name else scope)
    if outcome == pb.OUTCOME_PROXY_AUTH_REQUIRED:
        if group == "push":  # devices: apsd has no way to answer a 407
            return Action(_APSD_PROXY)
        return Action("exempt {} from proxy authentication", scope)
    if outcome == pb.OUTCOME_PROXY_DENIED:
        return Action("allow CONNECT to {} on the proxy", endpoint)
    if outcome in _BLOCKED:
        return _blocked(result, scope, apns)
    if outcome == pb.OUTCOME_TLS_INTERCEPTED:
        return Action("exempt {} from SSL inspection", scope)
    if outcome in (pb.OUTCOME_TLS_UNTRUSTED, pb.OUTCOME_TLS_HANDSHAKE_FAILED):
        return Action("let TLS to {} pass uninspected (its chain or handshake is altered)", scope)
    if outcome == pb.OUTCOME_TLS_NAME_MISMATCH:
        return Action("find the middlebox answering for {} with another certificate", scope)
    if outcome == pb.OUTCOME_TLS_ALPN_MISMATCH:
        return Action("let {} pass untouched: a middlebox strips HTTP/2", endpoint)
    if outcome == pb.OUTCOME_HTTP_BAD_STATUS:
        return Action("look for a block page or filter in front of {}", result.target)
    if outcome == pb.OUTCOME_PROTOCOL_ERROR:
        if result.check == "ntp":
            return Action("check NTP interception or rate limits for {}", result.target)
        return Action("find the middlebox: {} speaks another protocol", endpoint)
    return Action("read the detail of {} in courierwatch check --json", endpoint)


def _blocked(result: pb.Result, scope: str, apns: bool) -> Action:
    port = result.port
    if result.via == "proxy":
        return Action("the proxy cannot reach {}: check its firewall", f"{result.target}:{port}")
    if result.check == "ntp":
        return Action(f"allow UDP {port} outbound to {{}}", result.target)
    if result.address_family == "ipv6":
        return Action(f"allow TCP {port} outbound over IPv6 to {{}}", scope)
    return Action(f"allow TCP {port} outbound to {{}}", _APPLE_V4 if apns else scope)


def merge(actions: Iterable[Action]) -> list[str]:
    """One to-do per template, naming its subjects (the first few, then how many more)."""
    subjects: dict[str, list[str]] = {}
    for item in actions:
        named = subjects.setdefault(item.template, [])
        if item.subject not in named:
            named.append(item.subject)
    return [template.format(_names(named)) for template, named in subjects.items()]


def _names(subjects: list[str]) -> str:
    if len(subjects) <= _NAMED:
        return ", ".join(subjects)
    return f"{', '.join(subjects[:_NAMED])} and {len(subjects) - _NAMED} more"


@dataclass(frozen=True, slots=True)
class Failure:
    result: pb.Result
    action: Action


@dataclass(frozen=True, slots=True)
class GroupStatus:
    id: str
    title: str
    critical: bool
    checks: int
    failures: tuple[Failure, ...]

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True, slots=True)
class PushStatus:
    """The couriers as devices experience them: ok (primary port), degraded (only the 443
    fallback), down, or unknown (no courier checked)."""

    state: str
    summary: str
    pops: tuple[str, ...]  # points of presence seen in the push group's CNAME chains
    proxy: str  # "" not checked, "ok", or the failing outcome through the proxy


@dataclass(frozen=True, slots=True)
class Readiness:
    site: str
    probe: str
    elapsed: float  # seconds the whole run took
    results: tuple[pb.Result, ...]
    groups: tuple[GroupStatus, ...]
    push: PushStatus
    clocks: tuple[pb.Result, ...]  # the ntp results

    @property
    def ready(self) -> bool:
        """Every critical group works."""
        return all(group.ok for group in self.groups if group.critical)

    @property
    def failed(self) -> int:
        return sum(r.outcome != pb.OUTCOME_OK for r in self.results)

    @property
    def actions(self) -> tuple[str, ...]:
        """The to-do list: every action item, the same fix for many hosts merged into one,
        critical groups first."""
        ordered = sorted(self.groups, key=lambda g: not g.critical)
        return tuple(merge(f.action for g in ordered for f in g.failures))


def assess(
    results: Sequence[pb.Result],
    *,
    site: str = "",
    probe: str = "",
    elapsed: float = 0.0,
    groups: Sequence[catalog.Group],
) -> Readiness:
    """Group results by service, in the order of `groups`: the facts of every group the results
    use, as catalog.describe() gives them (a config's ProbeConfig.groups), which decides what
    is critical; this only reads them."""
    by_group: dict[str, list[pb.Result]] = {group.id: [] for group in groups}
    for result in results:
        members = by_group.get(result.group)
        if members is None:
            raise ValueError(f"no group facts for group {result.group!r} of {result.target}")
        members.append(result)
    statuses = []
    for group in groups:
        members = by_group[group.id]
        if not members:
            continue
        failures = tuple(
            Failure(r, action(r)) for r in _ordered(members) if r.outcome != pb.OUTCOME_OK
        )
        statuses.append(
            GroupStatus(
                id=group.id,
                title=group.title,
                critical=group.critical,
                checks=len(members),
                failures=failures,
            )
        )
    return Readiness(
        site=site,
        probe=probe,
        elapsed=elapsed,
        results=tuple(results),
        groups=tuple(statuses),
        push=push_status(results),
        clocks=tuple(r for r in results if r.check == "ntp"),
    )


def push_status(results: Sequence[pb.Result]) -> PushStatus:
    """Apple documents 443 only as a fallback (for years on Wi-Fi only), so couriers that
    answer only there leave the site degraded, not healthy. The direct path decides; the proxy
    path is reported beside it."""
    couriers = [r for r in results if r.check == "courier"]
    direct = [r for r in couriers if r.via != "proxy"]
    primary = [r for r in direct if r.port != FALLBACK_PORT]
    fallback = [r for r in direct if r.port == FALLBACK_PORT]
    port = "/".join(sorted({str(r.port) for r in primary})) or "5223"
    state = courier_state(direct) or "unknown"
    summary = {
        "unknown": "no courier checked",
        "ok": f"couriers answer on {port}",
        "degraded": f"{port} blocked, 443 fallback only",
        "down": "couriers unreachable",
    }[state]
    if state == "ok" and fallback and not _works(fallback):
        summary += "; the 443 fallback is blocked"
    # A family whose primary path fails while another's works: a broken IPv6 path, say.
    working = {r.address_family for r in primary if r.outcome == pb.OUTCOME_OK}
    broken = sorted({r.address_family for r in primary} - working - {""})
    if working and broken:
        summary += f"; {port} fails over {' and '.join(broken)}"
    proxied = [r for r in couriers if r.via == "proxy"]
    proxy = ""
    if proxied:
        failing = next((r for r in proxied if r.outcome != pb.OUTCOME_OK), None)
        proxy = "ok" if _works(proxied) else outcome_label(failing.outcome if failing else 0)
    pops = {r.pop for r in results if r.group == "push" and r.pop}
    return PushStatus(state, summary, tuple(sorted(pops)), proxy)


def _works(results: Sequence[pb.Result]) -> bool:
    return any(r.outcome == pb.OUTCOME_OK for r in results)


def _ordered(results: Iterable[pb.Result]) -> list[pb.Result]:
    return sorted(results, key=lambda r: (r.target, r.port, r.check, r.address_family, r.via))
