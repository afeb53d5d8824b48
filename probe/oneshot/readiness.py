"""What one run of the checks means for a site: its state and causes, per Apple service works or
not, and what to do.

Pure: results in, an assessment out (courierwatch.probe.oneshot.report prints it). The site's
state and causes are common.sitestate's, the same the collector shows. Each failure gets one
action item, chosen by its outcome and its service group, written for whoever runs the site's
firewall, DNS filter or proxy, and naming what the site's configuration says (Apple's ranges, the
proxy, the resolvers: `Facts`). An action is a template with one subject (a host, a domain, a
range), so that the same fix for many hosts is one to-do naming them all.

Ready means devices at the site can enrol and get push: no critical group down, no cause that
leaves the site unreachable, filtered or intercepted, and no clock off beyond its critical
threshold. A clock off by less is a degraded site, not a down group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from courierwatch.common import sitestate as ss
from courierwatch.common.results import FALLBACK_PORT, courier_state, outcome_label
from courierwatch.probe import catalog
from courierwatch.probe.checks import ntp
from courierwatch.probe.sanity import Network
from courierwatch.probe.targets import Target
from courierwatch.v1 import courierwatch_pb2 as pb

# Groups whose hosts live in Apple's own address space: rules can name the range and the domain.
_APNS: Final = frozenset({"push", "push_provider"})
_APNS_DOMAIN: Final = "*.push.apple.com"
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
# Apple (article 101555): devices reach APNs through an HTTP proxy set by hand, by MDM or by a
# PAC file, but not one that wants credentials or decrypts.
_APSD_PROXY: Final = (
    "{via} wants credentials, which apsd cannot give: exempt {{}} from authentication there,"
    " or allow 5223 direct"
)
_USE_THE_PROXY: Final = (
    "give devices {via} (set by hand, by MDM or in a PAC file): couriers answer through it"
)
# Causes that keep devices from enrolling or getting push, whatever else works.
_NOT_READY: Final = frozenset({ss.UNREACHABLE, ss.FILTERED, ss.INTERCEPTED})
# Degraded causes under which devices still get push as Apple documents it: their failures
# warn, never block. Not fallback_only: Apple requires 5223, 443 is only the fallback; nor
# provider_api_h2: an MDM server at the site can send no push without HTTP/2.
_TOLERATED: Final = frozenset({ss.NO_FALLBACK, ss.IPV6_BROKEN, ss.PROXY_PATH})


@dataclass(frozen=True, slots=True)
class Facts:
    """What the fix texts name from the site's configuration, so that each says what to change
    there: Apple's ranges (`apple.ranges`), the proxy (`proxy.url`), the resolvers."""

    ranges: tuple[Network, ...] = field(default_factory=lambda: catalog.apple().ranges)
    proxy: str = ""  # host:port of the site's proxy; "" without one
    resolvers: str = ""  # the configured nameservers as asked; "" for the system's

    def ranges_of(self, family: str) -> str:
        """The configured ranges of one family ("" for either), as a firewall rule lists them."""
        versions = {"ipv4": (4,), "ipv6": (6,)}.get(family, (4, 6))
        return ", ".join(str(net) for net in self.ranges if net.version in versions)

    @property
    def via(self) -> str:
        return f"the proxy {self.proxy}" if self.proxy else "the proxy"

    @property
    def resolver(self) -> str:
        return f"the resolver {self.resolvers}" if self.resolvers else "the system's resolver"


@dataclass(frozen=True, slots=True)
class Action:
    template: str  # "{}" marks where the subject goes (if anywhere)
    subject: str = ""

    @property
    def text(self) -> str:
        return self.template.format(self.subject)


def action(result: pb.Result, facts: Facts | None = None) -> Action:
    """The one thing to change so that this check works (for a failed result); facts: the
    site's configuration (the catalog's ranges, no proxy named, when None)."""
    facts = facts or Facts()
    outcome, group = result.outcome, result.group
    apns = group in _APNS
    scope = _APNS_DOMAIN if apns else result.target
    endpoint = f"{result.target}:{result.port}"
    if outcome in _DNS_ACTIONS:
        template, by_name = _DNS_ACTIONS[outcome]
        return Action(template, (result.dialled_host or result.target) if by_name else scope)
    if outcome == pb.OUTCOME_PROXY_AUTH_REQUIRED:
        if group == "push":  # devices: apsd has no way to answer a 407
            return Action(_APSD_PROXY.format(via=facts.via), _APNS_DOMAIN)
        return Action(f"exempt {{}} from authentication on {facts.via}", scope)
    if outcome == pb.OUTCOME_PROXY_DENIED:
        if result.check == "http" and result.port == 80:  # asked in absolute form, no CONNECT
            return Action(
                f"allow requests for {{}} through {facts.via}", f"http://{result.target}/"
            )
        return Action(f"allow CONNECT to {{}} on {facts.via}", endpoint)
    if outcome in _BLOCKED:
        return _blocked(result, scope, apns, facts)
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
    if outcome == pb.OUTCOME_CLOCK_SKEW:
        return Action(
            "set this probe's clock by NTP (it is off from {}) and check the site's devices:"
            " TLS and enrolment need the right time",
            result.target,
        )
    if outcome == pb.OUTCOME_PROTOCOL_ERROR:
        if result.via != "proxy" and not result.peer_address:  # nothing dialled: DNS broke
            return Action(
                f"{facts.resolver} sends malformed DNS replies for {{}}: check it, or what"
                " answers in its place on port 53",
                result.dialled_host or result.target,
            )
        if result.check == "ntp":
            return Action("check NTP interception or rate limits for {}", result.target)
        return Action("find the middlebox: {} speaks another protocol", endpoint)
    return Action("read the detail of {} in courierwatch check --json", endpoint)


def _blocked(result: pb.Result, scope: str, apns: bool, facts: Facts) -> Action:
    port = result.port
    if result.via == "proxy":
        return Action(
            f"{facts.via} cannot reach {{}}: check its firewall",
            f"{result.target}:{port}",
        )
    family = _family(result)
    over = " over IPv6" if family == "ipv6" else ""
    if result.check == "ntp":
        return Action(f"allow UDP {port} outbound{over} to {{}}", result.target)
    ranges = facts.ranges_of(family) if apns else ""
    return Action(f"allow TCP {port} outbound{over} to {{}}", ranges or scope)


def _family(result: pb.Result) -> str:
    """The family the check ran over: its label, else that of the addresses it was given."""
    if result.address_family or not result.addresses:
        return result.address_family
    return "ipv6" if ":" in result.addresses[0] else "ipv4"


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
    blocks: bool = True  # fails its group; a clock skew short of critical only degrades


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

    @property
    def down(self) -> bool:
        """Fails (for a critical group: the site is not ready)."""
        return any(failure.blocks for failure in self.failures)


@dataclass(frozen=True, slots=True)
class SiteCause:
    """One cause of the site's state (common.sitestate) and the actions that clear it."""

    cause: ss.Cause
    actions: tuple[Action, ...]

    @property
    def fixes(self) -> list[str]:
        return merge(self.actions)


@dataclass(frozen=True, slots=True)
class PushStatus:
    """The couriers as devices experience them: ok (primary port), degraded (only the 443
    fallback), down, or unknown (no courier checked)."""

    state: str
    summary: str
    pops: tuple[str, ...]  # points of presence seen in the push group's CNAME chains
    proxy: str  # "" not checked, "ok" (every port), or the first failing outcome through it
    proxy_ports: tuple[tuple[int, str], ...] = ()  # (port, "ok" or its outcome) through it


@dataclass(frozen=True, slots=True)
class Clock:
    result: pb.Result  # an ntp result
    critical: bool  # a skew beyond the target's critical_offset


@dataclass(frozen=True, slots=True)
class Readiness:
    site: str
    probe: str
    elapsed: float  # seconds the whole run took
    results: tuple[pb.Result, ...]
    groups: tuple[GroupStatus, ...]
    push: PushStatus
    clocks: tuple[Clock, ...]
    state: ss.SiteState  # common.sitestate's, as the collector has it
    causes: tuple[SiteCause, ...]  # the state's causes, worst first, with their fixes
    proxy: str  # the site's proxy, host:port ("" without one)

    @property
    def blockers(self) -> tuple[str, ...]:
        """Why the site is not ready, one phrase each; empty when it is."""
        found = []
        failing = [g.id for g in self.groups if g.critical and g.down]
        if failing:
            found.append(f"critical services fail: {', '.join(failing)}")
        # A critical group down is said above; the site's other blocking causes, by state.
        by_state: dict[str, list[str]] = {}
        for c in self.state.causes:
            if c.state in _NOT_READY and c.cause != ss.GROUP_DOWN:
                label = f"{c.group}: {c.cause}" if c.group else c.cause
                by_state.setdefault(c.state, []).append(label)
        if by_state:
            named = ", ".join(f"{state} ({', '.join(c)})" for state, c in by_state.items())
            found.append(f"site {named}")
        skewed = list(dict.fromkeys(c.result.target for c in self.clocks if c.critical))
        if skewed:
            found.append(f"clock off beyond the critical threshold: {', '.join(skewed)}")
        return tuple(found)

    @property
    def ready(self) -> bool:
        return not self.blockers

    @property
    def failed(self) -> int:
        return sum(r.outcome != pb.OUTCOME_OK for r in self.results)

    @property
    def actions(self) -> tuple[str, ...]:
        """The to-do list: every action item, the same fix for many hosts merged into one,
        critical groups first, then what only a site cause asks (such as using the proxy)."""
        ordered = sorted(self.groups, key=lambda g: not g.critical)
        failures = (f.action for g in ordered for f in g.failures)
        return tuple(merge([*failures, *(a for c in self.causes for a in c.actions)]))


def assess(
    results: Sequence[pb.Result],
    *,
    site: str = "",
    probe: str = "",
    elapsed: float = 0.0,
    groups: Sequence[catalog.Group],
    targets: Sequence[Target] = (),
    facts: Facts | None = None,
) -> Readiness:
    """Group results by service, in the order of `groups`: the facts of every group the results
    use, as catalog.describe() gives them (a config's ProbeConfig.groups), which decides what
    is critical; this only reads them. targets: the targets the results came from, in the same
    order (as scheduler.run_once returns them), for each ntp target's own critical threshold
    (without them, the default's). facts: the site's configuration, for the fix texts."""
    if targets and len(targets) != len(results):
        raise ValueError(f"{len(targets)} targets for {len(results)} results")
    facts = facts or Facts()
    clocks = tuple(
        Clock(r, ntp.critical(t, r))
        for r, t in zip(results, targets or map(_bare, results), strict=True)
        if r.check == "ntp"
    )
    state = ss.assess(results, {g.id: g.critical for g in groups}, proxy=facts.proxy)
    # What a degraded cause already explains leaves the site working: devices still get push
    # (over the fallback, over IPv4, directly), so it warns without blocking. A clock short of
    # its critical threshold likewise.
    tolerated = {id(c.result) for c in clocks if c.result.outcome == pb.OUTCOME_CLOCK_SKEW
                 and not c.critical}  # fmt: skip
    tolerated |= {
        id(r)
        for c in state.causes
        if c.state == ss.DEGRADED and c.cause in _TOLERATED
        for r in results
        if r.outcome != pb.OUTCOME_OK and r.group == c.group and _SHOWS[c.cause](r)
    }
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
            Failure(r, action(r, facts), blocks=id(r) not in tolerated)
            for r in _ordered(members)
            if r.outcome != pb.OUTCOME_OK
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
        push=push_status(results, state),
        clocks=clocks,
        state=state,
        causes=tuple(SiteCause(c, _fixes(c, state, results, facts)) for c in state.causes),
        proxy=facts.proxy,
    )


def _bare(result: pb.Result) -> Target:
    """A result's target as far as the result tells: its kind's default options."""
    return Target(result.target, result.port, result.check, result.group)


def _direct_courier(r: pb.Result) -> bool:
    return r.check == "courier" and r.via != "proxy"


# Which failed results show a cause, so that their fixes are its fixes (sitestate decides the
# cause; this only finds its evidence). GROUP_DOWN: what the group's other causes do not show.
_SHOWS: Final[Mapping[str, Callable[[pb.Result], bool]]] = {
    ss.COURIERS_UNREACHABLE: _direct_courier,
    ss.FALLBACK_ONLY: lambda r: _direct_courier(r) and r.port != FALLBACK_PORT,
    ss.NO_FALLBACK: lambda r: _direct_courier(r) and r.port == FALLBACK_PORT,
    ss.DNS_FILTER: lambda r: ss.filter_cause(r) == ss.DNS_FILTER,
    ss.DNS_HIJACK: lambda r: ss.filter_cause(r) == ss.DNS_HIJACK,
    ss.CLIENT_DNS_FILTER: lambda r: ss.filter_cause(r) == ss.CLIENT_DNS_FILTER,
    ss.TLS_INSPECTION: lambda r: r.outcome == pb.OUTCOME_TLS_INTERCEPTED,
    ss.IPV6_BROKEN: lambda r: _family(r) == "ipv6" and r.via != "proxy",
    ss.CLOCK_SKEW: lambda r: r.outcome == pb.OUTCOME_CLOCK_SKEW,
    ss.PROVIDER_API_H2: lambda r: r.outcome == pb.OUTCOME_TLS_ALPN_MISMATCH,
    ss.PROXY_PATH: lambda r: r.via == "proxy",
}


def _fixes(
    cause: ss.Cause, state: ss.SiteState, results: Sequence[pb.Result], facts: Facts
) -> tuple[Action, ...]:
    failed = [r for r in _ordered(results) if r.outcome != pb.OUTCOME_OK
              and (not cause.group or r.group == cause.group)]  # fmt: skip
    if cause.cause == ss.GROUP_DOWN:
        others = [_SHOWS[c.cause] for c in state.causes
                  if c.group == cause.group and c.cause in _SHOWS]  # fmt: skip
        shown = [r for r in failed if not any(shows(r) for shows in others)]
    else:
        shows = _SHOWS.get(cause.cause)
        shown = [r for r in failed if shows(r)] if shows else []
    actions = [action(r, facts) for r in shown]
    if cause.cause == ss.PROXY_PATH and cause.group == "push":
        direct = [r for r in results if _direct_courier(r)]
        if direct and not _works(direct):  # the proxy is the only way: use it, or open direct
            direct_fixes = [action(r, facts) for r in _ordered(direct)]
            actions = [Action(_USE_THE_PROXY.format(via=facts.via)), *direct_fixes, *actions]
    return tuple(actions)


# How a site cause reads in the push line when no courier answers directly.
_BLOCKED_BY: Final = {
    ss.DNS_FILTER: "blocked by a DNS filter",
    ss.DNS_HIJACK: "blocked: DNS rewrites the courier names",
    ss.TLS_INSPECTION: "blocked by SSL inspection",
    ss.PROXY_PATH: "couriers answer only through the proxy",
}


def push_status(results: Sequence[pb.Result], state: ss.SiteState | None = None) -> PushStatus:
    """Apple documents 443 only as a fallback (for years on Wi-Fi only), so couriers that
    answer only there leave the site degraded, not healthy. The direct path decides; the proxy
    path is reported beside it, port by port. With the site's state, couriers that do not
    answer say why (a DNS filter is not an outage)."""
    couriers = [r for r in results if r.check == "courier"]
    direct = [r for r in couriers if r.via != "proxy"]
    primary = [r for r in direct if r.port != FALLBACK_PORT]
    fallback = [r for r in direct if r.port == FALLBACK_PORT]
    port = "/".join(sorted({str(r.port) for r in primary})) or "5223"
    state_word = courier_state(direct) or "unknown"
    summary = {
        "unknown": "no courier checked",
        "ok": f"couriers answer on {port}",
        "degraded": f"{port} blocked, 443 fallback only",
        "down": "couriers unreachable",
    }[state_word]
    if state_word == "down" and state is not None:
        why = [_BLOCKED_BY[c.cause] for c in state.causes
               if c.group == "push" and c.cause in _BLOCKED_BY]  # fmt: skip
        summary = why[0] if why else summary
    if state_word == "ok" and fallback and not _works(fallback):
        summary += "; the 443 fallback is blocked"
    # A family whose primary path fails while another's works: a broken IPv6 path, say.
    working = {r.address_family for r in primary if r.outcome == pb.OUTCOME_OK}
    broken = sorted({r.address_family for r in primary} - working - {""})
    if working and broken:
        summary += f"; {port} fails over {' and '.join(broken)}"
    ports = _by_port([r for r in couriers if r.via == "proxy"])
    failing = [outcome for _, outcome in ports if outcome != "ok"]
    proxy = (failing[0] if failing else "ok") if ports else ""
    pops = {r.pop for r in results if r.group == "push" and r.pop}
    return PushStatus(state_word, summary, tuple(sorted(pops)), proxy, ports)


def _by_port(results: Sequence[pb.Result]) -> tuple[tuple[int, str], ...]:
    """Each port and what it got: ok when any check on it worked, else its first failure."""
    ports: dict[int, list[pb.Result]] = {}
    for r in results:
        ports.setdefault(r.port, []).append(r)
    return tuple(
        (port, "ok" if _works(members) else outcome_label(members[0].outcome))
        for port, members in sorted(ports.items())
    )


def _works(results: Sequence[pb.Result]) -> bool:
    return any(r.outcome == pb.OUTCOME_OK for r in results)


def _ordered(results: Iterable[pb.Result]) -> list[pb.Result]:
    return sorted(results, key=lambda r: (r.target, r.port, r.check, r.address_family, r.via))
