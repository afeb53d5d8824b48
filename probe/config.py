"""The probe's YAML config: identity, uplink, resolver, trust, schedule and what to check.

Every key is optional for `courierwatch check` and `up` (require_identity=False); the `probe`
daemon also needs site, collectors and transport. Targets are the chosen catalog groups plus the
config's own, which replace a catalog target with the same (host, port, check); then each
connecting target is expanded once per address family and, with a proxy, once through it.

Keys beyond identity and transport (defaults in brackets):

    resolver: {nameservers: [IP, ...], port: 53}   # [/etc/resolv.conf, as the site's Macs]
    trust:
      anchors: [PEM, ...]   # extra CAs a chain may verify against, on top of the system store
                            # and the catalog's Apple Root CA ("expected")
      site: [PEM, ...]      # CAs your site deployed, e.g. an SSL-inspection root: a chain that
                            # verifies only against these is tls_intercepted, naming its issuer
      system: true          # also trust the system store
    schedule: {concurrency: 32, jitter: 0.1, tick: auto}  # tick: runs start on this grid
                            # (probe.scheduler): auto, a duration up to 5s, or 0 for none
    catalog:
      groups: [push, ...]   # [all]
      settings: {push: {interval: 30s, timeout: 5s}}
      exclude: {device_setup: [humb.apple.com]}  # hosts of a group left out (every check of
                            # them); a host the group does not have is an error naming it. A
                            # host another chosen group also lists is still checked there.
    apple:                  # facts about Apple's network [from the catalog]
      ranges: [17.0.0.0/8, "2620:149::/32", ...]  # where Apple-owned names must resolve
      owned_groups: [push, push_provider]  # catalog groups whose names must resolve into ranges
                            # (the other groups must resolve to public addresses)
      courier_numbers: 1-50 # N of N-courier.push.apple.com ("1-3,7" or a list)
      pop_pattern: '(?P<pop>...)-courier-...'  # names the POP in a courier CNAME chain
    proxy:
      url: http://proxy.example:3128  # the site's HTTP proxy [none]: each tcp/tls/http/courier
                            # target is also checked through it with CONNECT. No credentials:
                            # apsd cannot give them (a PAC file naming the proxy is fine).
    families: auto          # or [ipv4], [ipv4, ipv6]; auto: IPv6 too when this host has a
                            # global IPv6 address with a route (courierwatch.probe.families);
                            # what it chose and why is logged and kept in families_reason
    targets:                # your own
      - host: mdm.example.net       # required
        port: 443                   # required unless the kind has a default port
        check: http                 # a registered check kind
        group: custom               # label; a group the catalog does not have is critical
        interval: 60s               # from 1s to 1d
        timeout: 10s                # from 100ms to 5m and shorter than the interval
                                    # [10s, or half the interval if that is shorter]
        addresses: any              # apple (within apple.ranges), public, or any (only 0.0.0.0
                                    # and :: are refused)
        path: /health               # and the options of its kind: each kind's SPEC declares
                                    # them (courierwatch.probe.checks), README.md tabulates them
    include: discovered.yaml  # [none] or a list; also spelt targets_file: files of only a
                            # `targets:` list as above (what `courierwatch discover
                            # --write-targets` writes), relative to this file, added to its
                            # targets with the same duplicate check; errors name the included
                            # file, and its bytes are part of the config digest
    discover:               # the site's devices' DNS, live, as the Pi-hole on this host sees it
      pihole_db: /etc/pihole/pihole-FTL.db  # [none] read-only, every interval, from where the
                            # last pass stopped (a dns_clients target, group dns_clients)
      interval: 60s         # from 1s to 1d, as a target's
      top: 10               # blocked Apple names a result's detail names, at most
      rows: 100000          # new rows read per pass at most; the rest wait for the next
    Groups `discovered` (what --write-targets writes) and `dns_clients` are advisory
    (ADVISORY_GROUPS): a failure there makes the site degraded, never unreachable or NOT READY.
    spool:                  # where results wait until a collector acknowledges them
      path: /var/lib/courierwatch/spool.sqlite  # [spool-<probe_id>.sqlite in $STATE_DIRECTORY
                            # under systemd, else in ~/.local/state/courierwatch: two probes
                            # on one host never share one. A spool.sqlite left there by an
                            # earlier version is used while spool-<probe_id>.sqlite does not
                            # exist (said in the log), so an upgrade loses no result]
      max_mb: 256           # integer megabytes; beyond it the oldest results are dropped
      max_age: 48h          # from 1m to 365d; older unsent results are dropped
    uplink:
      ack_timeout: 30s      # from 1s to 10m: a batch unacknowledged this long, with no Busy
                            # heard either, means the collector is stuck: try the next one

Files (trust.*, transport.*, a target's anchors) must be regular files of at most 1 MiB; PEM
files are parsed at load, so a wrong one is a config error naming it. The YAML takes plain
values, lists and mappings (a date is a string): other tags, nesting deeper than 32 levels
and aliases that expand beyond 100,000 values are errors naming the line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from courierwatch.common.configfile import (
    BUILTIN,
    REQUIRED,
    Document,
    Section,
    TransportConfig,
    describe,
    digest,
    format_duration,
    from_text,
    join_host_port,
    read_transport,
    read_yaml,
    to_address,
    to_choice,
    to_duration_between,
    to_host,
    to_ip,
    unknown_name,
)
from courierwatch.discover.targets import GROUP as DISCOVERED
from courierwatch.probe import catalog, checks, families, sanity
from courierwatch.probe.checks import dns_clients
from courierwatch.probe.checks.spec import TARGET_KEYS, Facts
from courierwatch.probe.families import CONFIGURED
from courierwatch.probe.net.proxy import ProxySettings, parse_proxy_url
from courierwatch.probe.targets import ADDRESS_POLICIES, FAMILIES, Target, expand

__all__ = [
    "ACK_TIMEOUT", "ProbeConfig", "default_probe_id", "default_spool_path", "load_probe_config",
]  # fmt: skip

log = logging.getLogger(__name__)

# Site, probe id and group end up as Prometheus label values: keep them short and plain.
_LABEL = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LABEL_WHAT = "1 to 64 characters from A-Z a-z 0-9 . _ -"

_TOP_KEYS: Final = (
    "site", "probe_id", "collectors", "transport", "resolver", "trust", "schedule", "catalog",
    "apple", "proxy", "families", "targets", "spool", "include", "targets_file", "discover",
    "uplink",
)  # fmt: skip
_INCLUDE_KEYS: Final = ("include", "targets_file")  # one key, two spellings
# Groups of targets courierwatch makes itself from what the site's devices asked for: leads to
# look into, not services Apple says a device needs, so never critical (a failure there makes the
# site degraded, not unreachable, and `check` stays READY). Decided here, the one place: the
# report, the Hello and so the collector read ProbeConfig.groups. To make a discovered name
# critical, give its target a group of your own.
ADVISORY_GROUPS: Final = {
    DISCOVERED: "Names the site's devices asked for (courierwatch discover)",
    dns_clients.GROUP: "The site's DNS filter, as the devices meet it",
}
_LIVE_TIMEOUT: Final = 30.0
_DEFAULT_INTERVAL: Final = 60.0
_DEFAULT_TIMEOUT: Final = 10.0
# Floors a check's cadence cannot go below: one run a second per target is already far more
# than any endpoint needs, and a run shorter than 100 ms cannot finish a TLS handshake across
# the Internet. The timeout stays below the interval so that a hanging endpoint still leaves
# each run its slot (the scheduler skips a slot rather than doubling up).
_INTERVALS: Final = (1.0, 86400.0)
_TIMEOUTS: Final = (0.1, 300.0)
_NO_FILE_DIGEST: Final = digest(b"")
_LEGACY_SPOOL_FILE: Final = "spool.sqlite"  # the default before it named the probe
_SPOOL_MAX_MB: Final = 256
_SPOOL_MAX_AGE: Final = 48 * 3600.0
_SPOOL_AGES: Final = (60.0, 365 * 86400.0)
# How long a batch may go unacknowledged, with nothing heard from the collector, before the
# probe takes it for stuck and reconnects (the collector sends Busy at a third of it). Also
# what a Hello without one means (the proto says so), to probe/uplink.py and the collector.
ACK_TIMEOUT: Final = 30.0
_ACK_TIMEOUTS: Final = (1.0, 600.0)
_MB: Final = 1024 * 1024


def _state_home() -> Path:
    """systemd's StateDirectory= when run as a unit (it exports STATE_DIRECTORY,
    colon-separated if several), else the XDG state home."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) if state else Path.home() / ".local" / "state" / "courierwatch"


def default_spool_path(probe_id: str | None = None) -> str:
    """Where results wait for the collector: spool-<probe_id>.sqlite in the state directory,
    so two probes on one host keep apart.

    A spool.sqlite there (the default of earlier versions) while the new file does not exist
    is used instead, and said in the log: it may hold results never acknowledged, and renaming
    a SQLite file (with its -wal) that an old process may still have open is not the loader's
    business. Moving it, or setting spool.path, ends that.
    """
    base = _state_home()
    new = base / f"spool-{probe_id or default_probe_id()}.sqlite"
    legacy = base / _LEGACY_SPOOL_FILE
    if not new.exists() and legacy.exists():
        log.warning(
            "spool: using %s, the default of earlier versions, which may hold undelivered "
            "results; stop the probe and rename it to %s (or set spool.path) to end this",
            legacy,
            new,
        )
        return str(legacy)
    return str(new)


def default_probe_id() -> str:
    """The host name, made label-safe: what tells two probes at one site apart by default."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64] or "probe"


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    source: str = BUILTIN  # the config file, or "<built-in defaults>"
    site: str = "local"
    probe_id: str = field(default_factory=default_probe_id)
    collectors: tuple[str, ...] = ()  # host:port, tried in order
    transport: TransportConfig = field(default_factory=TransportConfig)
    nameservers: tuple[str, ...] = ()  # IP addresses; empty: the system resolver configuration
    resolver_port: int = 53
    trust_anchors: tuple[str, ...] = ()  # extra PEM files trusted by every TLS check
    trust_site: tuple[str, ...] = ()  # the site's own CAs (SSL inspection): chains are intercepted
    trust_system: bool = True  # also trust the system store
    concurrency: int = 32  # checks running at once
    jitter: float = 0.1  # fraction of the interval each run may move, to spread the load
    tick: float | None = None  # seconds between the instants runs start at; None: automatic
    apple_ranges: tuple[sanity.Network, ...] = field(default_factory=lambda: catalog.apple().ranges)
    pop_pattern: re.Pattern[str] = field(default_factory=lambda: catalog.apple().pop_pattern)
    proxy: ProxySettings | None = None
    families: tuple[str, ...] = ("ipv4",)  # resolved: "auto" is decided at load time
    # Why these families: families.CONFIGURED, or what `auto` found ("IPv4 only: no IPv6
    # default route"); the probe sends it in its Hello.
    families_reason: str = CONFIGURED
    targets: tuple[Target, ...] = ()  # expanded per family and path
    # The facts (title, criticality) of every group the targets use, from the catalog
    # (catalog.describe); the probe sends them to the collector in its Hello.
    groups: tuple[catalog.Group, ...] = ()
    spool_path: str = ""  # SQLite file of unsent results; "": default_spool_path(probe_id)
    spool_max_bytes: int = _SPOOL_MAX_MB * _MB  # oldest results are dropped beyond this size
    spool_max_age: float = _SPOOL_MAX_AGE  # seconds; older unsent results are dropped
    digest: str = _NO_FILE_DIGEST  # SHA-256 of the config file, sent to the collector
    ack_timeout: float = ACK_TIMEOUT  # seconds; sent in the Hello (probe/uplink.py)

    def __post_init__(self) -> None:
        if not self.spool_path:
            object.__setattr__(self, "spool_path", default_spool_path(self.probe_id))


def load_probe_config(
    path: str | None,
    *,
    require_identity: bool = True,
    insecure: bool = False,
    host_has_ipv6: Callable[[], families.IPv6 | bool] = families.host_has_ipv6,
) -> ProbeConfig:
    """Read and validate a probe config file; path None gives the built-in defaults.

    Raises ConfigError, whose str() is one line naming file, line and field. host_has_ipv6
    decides `families: auto` (tests pass their own, or a bare bool); the choice and its reason
    are logged. A target's check is any registered kind (courierwatch.probe.checks.kinds()).
    """
    doc = read_yaml(path)
    root = doc.root
    root.check_keys(*_TOP_KEYS)
    site = root.string(
        "site", REQUIRED if require_identity else "local", pattern=_LABEL, what=_LABEL_WHAT
    )
    probe_id = root.string("probe_id", default_probe_id(), pattern=_LABEL, what=_LABEL_WHAT)
    collectors = root.list_of("collectors", to_address())
    if require_identity and not collectors:
        raise root.error("at least one collector host:port is required", "collectors")
    # `check` and `up` send nothing over the configured transport, so only its shape matters.
    transport = read_transport(
        root.section("transport"), required=require_identity, insecure=insecure
    )

    resolver = root.section("resolver")
    resolver.check_keys("nameservers", "port")
    trust = root.section("trust")
    trust.check_keys("anchors", "site", "system")
    schedule = root.section("schedule")
    schedule.check_keys("concurrency", "jitter", "tick")
    spool = root.section("spool")
    spool.check_keys("path", "max_mb", "max_age")
    uplink = root.section("uplink")
    uplink.check_keys("ack_timeout")
    apple = _apple(root.section("apple"))
    proxy = _proxy(root.section("proxy"))
    chosen = _families(root, host_has_ipv6)
    included = _included(root)
    targets = _targets(root, apple, included)

    config = ProbeConfig(
        source=doc.source,
        site=site,
        probe_id=probe_id,
        collectors=collectors,
        transport=transport,
        nameservers=resolver.list_of("nameservers", to_ip),
        resolver_port=resolver.integer("port", 53, min=1, max=65535),
        trust_anchors=trust.certificate_files("anchors"),
        trust_site=trust.certificate_files("site"),
        trust_system=trust.boolean("system", True),
        concurrency=schedule.integer("concurrency", 32, min=1, max=10000),
        jitter=schedule.number("jitter", 0.1, min=0, max=0.5),
        tick=schedule.value("tick", _tick, None),
        apple_ranges=apple.ranges,
        pop_pattern=apple.pop_pattern,
        proxy=proxy,
        families=chosen.families,
        families_reason=chosen.reason,
        targets=expand(targets, chosen.families, proxy=proxy is not None),
        groups=_group_facts(target.group for target in targets),
        spool_path=spool.path("path", None) or "",  # "": the default, once all else is valid
        spool_max_bytes=spool.integer("max_mb", _SPOOL_MAX_MB, min=1, max=65536) * _MB,
        spool_max_age=spool.duration("max_age", _SPOOL_MAX_AGE, within=_SPOOL_AGES),
        digest=_digest(doc, included),
        ack_timeout=uplink.duration("ack_timeout", ACK_TIMEOUT, within=_ACK_TIMEOUTS),
    )
    if chosen.reason != CONFIGURED:  # said once the whole file is valid: an error stays one line
        log.info("families: auto: %s", chosen.reason)
    return config


_TICKS = to_duration_between(0, 5)


def _tick(value: object) -> float | None:
    """schedule.tick: "auto" (None: the scheduler sizes it), or a duration; 0 is no grid."""
    if value == "auto":
        return None
    try:
        return _TICKS(value)
    except ValueError as error:
        raise ValueError(f'must be "auto" or a {str(error).removeprefix("must be a ")}') from None


@dataclass(frozen=True, slots=True)
class _Apple:
    ranges: tuple[sanity.Network, ...]
    owned_groups: tuple[str, ...] | None  # None: as the catalog says
    courier_numbers: tuple[int, ...]
    pop_pattern: re.Pattern[str]


def _apple(sec: Section) -> _Apple:
    sec.check_keys("ranges", "owned_groups", "courier_numbers", "pop_pattern")
    facts = catalog.read_apple(sec, catalog.apple())  # each key as the catalog's is read
    known = catalog.groups()
    return _Apple(
        ranges=facts.ranges,
        owned_groups=(
            sec.list_of("owned_groups", to_choice(known, "catalog group"))
            if sec.has("owned_groups")
            else None
        ),
        courier_numbers=facts.courier_numbers,
        pop_pattern=facts.pop_pattern,
    )


def _proxy(sec: Section) -> ProxySettings | None:
    sec.check_keys("url")
    return sec.value("url", from_text(parse_proxy_url), None)


def _families(root: Section, host_has_ipv6: Callable[[], families.IPv6 | bool]) -> families.Choice:
    if root.value("families", _auto_or_list, "auto") == "auto":
        return families.auto(host_has_ipv6())
    chosen = root.list_of("families", to_choice(FAMILIES, "address family"))
    if not chosen:
        raise root.error("must be auto or name at least one family", "families")
    return families.Choice(tuple(dict.fromkeys(chosen)), CONFIGURED)


def _auto_or_list(value: Any) -> Any:
    if value == "auto" or isinstance(value, list):
        return value
    raise ValueError(f"must be auto or a list of ipv4 and ipv6, got {describe(value)}")


def _targets(root: Section, apple: _Apple, included: list[Document]) -> tuple[Target, ...]:
    merged = {target.key: target for target in _catalog_targets(root.section("catalog"), apple)}
    seen: dict[tuple[str, int, str], str] = {}
    facts = catalog.kind_facts(apple.courier_numbers)
    own = [*root.sections("targets"), *(s for d in included for s in d.root.sections("targets"))]
    made = [(sec, _custom_target(sec, facts)) for sec in own]
    live = _live(root.section("discover"))
    for sec, target in [*made, *([live] if live else [])]:
        if target.key in seen:
            host, port, check = target.key
            where = join_host_port(host, port)
            raise sec.error(f"duplicate target {where} {check} (also {seen[target.key]})")
        elsewhere = "" if sec.source == root.source else f" of {sec.source}"
        seen[target.key] = f"{sec.field}{elsewhere}, line {sec.line}"
        merged[target.key] = target  # replaces a catalog target in place, or comes after them
    return tuple(merged.values())


def _included(root: Section) -> list[Document]:
    """The files `include:` (or `targets_file:`) names, relative to the config: each a mapping
    of only `targets:`, read as the config's own are (errors name that file)."""
    written = [key for key in _INCLUDE_KEYS if root.has(key)]
    if not written:
        return []
    key = written[0]
    if len(written) > 1:
        raise root.error(f"{key} and {written[1]} are one key: write one", written[1])
    if isinstance(root.value(key, _path_or_list), str):
        paths: tuple[str, ...] = (root.value(key, root.readable),)
    else:
        paths = root.list_of(key, root.readable)
    documents = []
    for path in paths:
        document = read_yaml(path)
        document.root.check_keys("targets")
        documents.append(document)
    return documents


def _path_or_list(value: Any) -> Any:
    if isinstance(value, str | list):
        return value
    raise ValueError(f"must be a file path or a list of them, got {describe(value)}")


def _digest(doc: Document, included: list[Document]) -> str:
    """The config file's digest, or with includes one over every file's, in order."""
    if not included:
        return doc.digest
    return digest("".join(d.digest for d in (doc, *included)).encode())


def _live(sec: Section) -> tuple[Section, Target] | None:
    """`discover:` as the dns_clients target it stands for (courierwatch.probe.checks.dns_clients),
    with the kind's own options read by the kind's own parsers."""
    sec.check_keys("pihole_db", "interval", "top", "rows")
    if not sec.has("pihole_db"):
        for key in ("interval", "top", "rows"):
            if sec.has(key):
                raise sec.error(f"is required when discover.{key} is set", "pihole_db")
        return None
    database = str(Path(sec.path("pihole_db")).absolute())
    interval = sec.duration("interval", _DEFAULT_INTERVAL, within=_INTERVALS)
    options = {
        dns_clients.DATABASE.name: database,
        **{o.name: sec.value(o.name, o.convert, o.default) for o in (dns_clients.TOP,
                                                                       dns_clients.ROWS)},
    }  # fmt: skip
    return sec, Target.of(
        options,
        host=dns_clients.HOST,
        port=dns_clients.PORT,
        check=dns_clients.SPEC.name,
        group=dns_clients.GROUP,
        interval=interval,
        timeout=min(_LIVE_TIMEOUT, interval / 2),
    )


def _group_facts(group_ids: Iterable[str]) -> tuple[catalog.Group, ...]:
    """catalog.describe(), but for ADVISORY_GROUPS: titled as there, and not critical."""
    known = catalog.groups()
    return tuple(
        dataclasses.replace(group, title=ADVISORY_GROUPS[group.id], critical=False)
        if group.id in ADVISORY_GROUPS and group.id not in known
        else group
        for group in catalog.describe(group_ids)
    )


def _catalog_targets(sec: Section, apple: _Apple) -> list[Target]:
    sec.check_keys("groups", "settings", "exclude")
    known = catalog.groups()
    chosen = (
        list(dict.fromkeys(sec.list_of("groups", to_choice(known, "catalog group"))))
        if sec.has("groups")
        else list(known)  # absent: every group; [] is none
    )
    settings = _catalog_settings(sec.section("settings"), known)

    def of(group_ids: list[str]) -> list[Target]:
        return catalog.targets(
            group_ids,
            settings,
            courier_numbers=apple.courier_numbers,
            apple_groups=apple.owned_groups,
        )

    excluded = _exclusions(sec.section("exclude"), known, chosen, of)
    if not excluded:
        return of(chosen)
    # Group by group, in catalog order: a (host, port, check) two groups list belongs to the
    # earlier one, as catalog.targets decides, unless that group excludes the host.
    found: dict[tuple[str, int, str], Target] = {}
    for group_id in (g for g in known if g in chosen):
        for target in of([group_id]):
            if target.host not in excluded.get(group_id, ()):
                found.setdefault(target.key, target)
    return list(found.values())


def _catalog_settings(
    sec: Section, known: dict[str, catalog.Group]
) -> dict[str, tuple[float | None, float | None]]:
    settings: dict[str, tuple[float | None, float | None]] = {}
    for group_id in _group_keys(sec, known):
        group = sec.section(group_id)
        group.check_keys("interval", "timeout")
        interval = group.duration("interval", None, within=_INTERVALS)
        timeout = group.duration("timeout", None, within=_TIMEOUTS)
        # Either override may cross the catalog's other value, so compare the effective pair.
        effective = (
            known[group_id].interval if interval is None else interval,
            known[group_id].timeout if timeout is None else timeout,
        )
        if effective[1] >= effective[0]:
            raise sec.error(
                f"timeout ({format_duration(effective[1])}) must be shorter than the interval "
                f"({format_duration(effective[0])})",
                group_id,
            )
        settings[group_id] = (interval, timeout)
    return settings


def _group_keys(sec: Section, known: dict[str, catalog.Group]) -> list[str]:
    """The keys of `sec` (catalog.settings, catalog.exclude): each must be a catalog group."""
    for group_id in (names := sec.names()):
        if group_id not in known:
            raise sec.error(unknown_name("catalog group", group_id, known), group_id)
    return names


def _exclusions(
    sec: Section,
    known: dict[str, catalog.Group],
    chosen: list[str],
    of: Callable[[list[str]], list[Target]],
) -> dict[str, frozenset[str]]:
    """catalog.exclude: group id -> hosts of it left out; each must be a host the group has."""
    excluded: dict[str, frozenset[str]] = {}
    for group_id in _group_keys(sec, known):
        if group_id not in chosen:
            raise sec.error(f"catalog group {group_id} is not among catalog.groups", group_id)
        hosts = {target.host for target in of([group_id])}
        excluded[group_id] = frozenset(sec.list_of(group_id, to_choice(hosts, f"{group_id} host")))
    return excluded


def _custom_target(sec: Section, facts: Facts) -> Target:
    kinds, options = checks.kinds(), checks.option_names()
    sec.check_keys(*TARGET_KEYS, *options)
    kind = kinds[sec.value("check", to_choice(kinds, "check kind"))]
    host = sec.value("host", to_host)
    # A dns check asks port 53 whatever the service port; the catalog keys it the same way.
    port = sec.integer(
        "port", REQUIRED if kind.default_port is None else kind.default_port, min=1, max=65535
    )
    interval = sec.duration("interval", _DEFAULT_INTERVAL, within=_INTERVALS)
    timeout = sec.duration("timeout", min(_DEFAULT_TIMEOUT, interval / 2), within=_TIMEOUTS)
    if timeout >= interval:
        raise sec.error(
            f"must be shorter than the interval ({format_duration(interval)}), "
            f"got {format_duration(timeout)}",
            "timeout",
        )
    return Target.of(
        # A file option names CA certificates (anchors, the one there is): parse them now.
        kind.read_options(sec, port, facts, known=options, file=sec.certificate_file),
        host=host,
        port=port,
        check=kind.name,
        group=sec.string("group", "custom", pattern=_LABEL, what=_LABEL_WHAT),
        interval=interval,
        timeout=timeout,
        addresses=sec.value("addresses", to_choice(ADDRESS_POLICIES, "address policy"), "any"),
    )
