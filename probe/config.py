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
    schedule: {concurrency: 32, jitter: 0.1}
    catalog: {groups: [push, ...], settings: {push: {interval: 30s, timeout: 5s}}}  # [all]
    apple:                  # facts about Apple's network [from the catalog]
      ranges: [17.0.0.0/8, "2620:149::/32", ...]  # where Apple-owned names must resolve
      owned_groups: [push, push_provider]  # catalog groups whose names must resolve into ranges
                            # (the other groups must resolve to public addresses)
      courier_numbers: 1-50 # N of N-courier.push.apple.com ("1-3,7" or a list)
      pop_pattern: '(?P<pop>...)-courier-...'  # names the POP in a courier CNAME chain
    proxy:
      url: http://proxy.example:3128  # the site's HTTP proxy [none]: each tcp/tls/http/courier
                            # target is also checked through it with CONNECT. No credentials
                            # and no PAC: apsd can use neither.
    families: auto          # or [ipv4], [ipv4, ipv6]; auto: IPv6 too when this host has a
                            # global IPv6 address with a route (courierwatch.probe.families)
    targets:                # your own
      - host: mdm.example.net       # required
        port: 443                   # required unless the kind has a default port
        check: http                 # a registered check kind
        group: custom               # label; a group the catalog does not have is critical
        interval: 60s
        timeout: 10s
        addresses: any              # apple (within apple.ranges), public, or any (only 0.0.0.0
                                    # and :: are refused)
        path: /health               # and the options of its kind: each kind's SPEC declares
                                    # them (courierwatch.probe.checks), README.md tabulates them
    spool:                  # where results wait until a collector acknowledges them
      path: /var/lib/courierwatch/spool.sqlite  # [$STATE_DIRECTORY/spool.sqlite under systemd,
                            # else ~/.local/state/courierwatch/spool.sqlite]
      max_mb: 256           # integer megabytes; beyond it the oldest results are dropped
      max_age: 48h          # a duration; older unsent results are dropped
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from courierwatch.common.configfile import (
    BUILTIN,
    REQUIRED,
    Section,
    TransportConfig,
    describe,
    digest,
    from_text,
    read_transport,
    read_yaml,
    to_address,
    to_choice,
    to_host,
    to_ip,
    unknown_name,
)
from courierwatch.probe import catalog, checks, families, sanity
from courierwatch.probe.checks.spec import TARGET_KEYS, Facts
from courierwatch.probe.net.proxy import ProxySettings, parse_proxy_url
from courierwatch.probe.targets import ADDRESS_POLICIES, FAMILIES, Target, expand

__all__ = ["ProbeConfig", "default_probe_id", "load_probe_config"]

# Site, probe id and group end up as Prometheus label values: keep them short and plain.
_LABEL = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LABEL_WHAT = "1 to 64 characters from A-Z a-z 0-9 . _ -"

_TOP_KEYS: Final = (
    "site", "probe_id", "collectors", "transport", "resolver", "trust", "schedule", "catalog",
    "apple", "proxy", "families", "targets", "spool",
)  # fmt: skip
_DEFAULT_INTERVAL: Final = 60.0
_DEFAULT_TIMEOUT: Final = 10.0
_NO_FILE_DIGEST: Final = digest(b"")
_SPOOL_FILE: Final = "spool.sqlite"
_SPOOL_MAX_MB: Final = 256
_SPOOL_MAX_AGE: Final = 48 * 3600.0
_MB: Final = 1024 * 1024


def default_spool_path() -> str:
    """Where results wait for the collector: systemd's StateDirectory= when run as a unit
    (it exports STATE_DIRECTORY, colon-separated if several), else the XDG state home."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    base = Path(state) if state else Path.home() / ".local" / "state" / "courierwatch"
    return str(base / _SPOOL_FILE)


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
    apple_ranges: tuple[sanity.Network, ...] = field(default_factory=lambda: catalog.apple().ranges)
    pop_pattern: re.Pattern[str] = field(default_factory=lambda: catalog.apple().pop_pattern)
    proxy: ProxySettings | None = None
    families: tuple[str, ...] = ("ipv4",)  # resolved: "auto" is decided at load time
    targets: tuple[Target, ...] = ()  # expanded per family and path
    # The facts (title, criticality) of every group the targets use, from the catalog
    # (catalog.describe); the probe sends them to the collector in its Hello.
    groups: tuple[catalog.Group, ...] = ()
    spool_path: str = field(default_factory=default_spool_path)  # SQLite file of unsent results
    spool_max_bytes: int = _SPOOL_MAX_MB * _MB  # oldest results are dropped beyond this size
    spool_max_age: float = _SPOOL_MAX_AGE  # seconds; older unsent results are dropped
    digest: str = _NO_FILE_DIGEST  # SHA-256 of the config file, sent to the collector


def load_probe_config(
    path: str | None,
    *,
    require_identity: bool = True,
    insecure: bool = False,
    host_has_ipv6: Callable[[], bool] = families.host_has_ipv6,
) -> ProbeConfig:
    """Read and validate a probe config file; path None gives the built-in defaults.

    Raises ConfigError, whose str() is one line naming file, line and field. host_has_ipv6
    decides `families: auto` (tests pass their own). A target's check is any registered kind
    (courierwatch.probe.checks.kinds()).
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
    schedule.check_keys("concurrency", "jitter")
    spool = root.section("spool")
    spool.check_keys("path", "max_mb", "max_age")
    apple = _apple(root.section("apple"))
    proxy = _proxy(root.section("proxy"))
    chosen = _families(root, host_has_ipv6)
    targets = _targets(root, apple)

    return ProbeConfig(
        source=doc.source,
        site=site,
        probe_id=probe_id,
        collectors=collectors,
        transport=transport,
        nameservers=resolver.list_of("nameservers", to_ip),
        resolver_port=resolver.integer("port", 53, min=1, max=65535),
        trust_anchors=trust.files("anchors"),
        trust_site=trust.files("site"),
        trust_system=trust.boolean("system", True),
        concurrency=schedule.integer("concurrency", 32, min=1, max=10000),
        jitter=schedule.number("jitter", 0.1, min=0, max=0.5),
        apple_ranges=apple.ranges,
        pop_pattern=apple.pop_pattern,
        proxy=proxy,
        families=chosen,
        targets=expand(targets, chosen, proxy=proxy is not None),
        groups=catalog.describe(target.group for target in targets),
        spool_path=spool.path("path", None) or default_spool_path(),
        spool_max_bytes=spool.integer("max_mb", _SPOOL_MAX_MB, min=1, max=65536) * _MB,
        spool_max_age=spool.duration("max_age", _SPOOL_MAX_AGE),
        digest=doc.digest,
    )


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


def _families(root: Section, host_has_ipv6: Callable[[], bool]) -> tuple[str, ...]:
    if root.value("families", _auto_or_list, "auto") == "auto":
        return ("ipv4", "ipv6") if host_has_ipv6() else ("ipv4",)
    chosen = root.list_of("families", to_choice(FAMILIES, "address family"))
    if not chosen:
        raise root.error("must be auto or name at least one family", "families")
    return tuple(dict.fromkeys(chosen))


def _auto_or_list(value: Any) -> Any:
    if value == "auto" or isinstance(value, list):
        return value
    raise ValueError(f"must be auto or a list of ipv4 and ipv6, got {describe(value)}")


def _targets(root: Section, apple: _Apple) -> tuple[Target, ...]:
    merged = {target.key: target for target in _catalog_targets(root.section("catalog"), apple)}
    seen: dict[tuple[str, int, str], str] = {}
    facts = catalog.kind_facts(apple.courier_numbers)
    for sec in root.sections("targets"):
        target = _custom_target(sec, facts)
        if target.key in seen:
            host, port, check = target.key
            host = f"[{host}]" if ":" in host else host
            raise sec.error(f"duplicate target {host}:{port} {check} (also {seen[target.key]})")
        seen[target.key] = f"{sec.field}, line {sec.line}"
        merged[target.key] = target  # replaces a catalog target in place, or comes after them
    return tuple(merged.values())


def _catalog_targets(sec: Section, apple: _Apple) -> list[Target]:
    sec.check_keys("groups", "settings")
    known = catalog.groups()
    group_ids = (
        list(dict.fromkeys(sec.list_of("groups", to_choice(known, "catalog group"))))
        if sec.has("groups")
        else None  # absent: every group; [] is none
    )
    settings_sec = sec.section("settings")
    settings: dict[str, tuple[float | None, float | None]] = {}
    for group_id in settings_sec.names():
        if group_id not in known:
            raise settings_sec.error(unknown_name("catalog group", group_id, known), group_id)
        group = settings_sec.section(group_id)
        group.check_keys("interval", "timeout")
        interval, timeout = group.duration("interval", None), group.duration("timeout", None)
        # Either override may cross the catalog's other value, so compare the effective pair.
        effective = (
            known[group_id].interval if interval is None else interval,
            known[group_id].timeout if timeout is None else timeout,
        )
        if effective[1] > effective[0]:
            raise settings_sec.error(
                f"timeout ({effective[1]:g}s) must not exceed interval ({effective[0]:g}s)",
                group_id,
            )
        settings[group_id] = (interval, timeout)
    return catalog.targets(
        group_ids,
        settings,
        courier_numbers=apple.courier_numbers,
        apple_groups=apple.owned_groups,
    )


def _custom_target(sec: Section, facts: Facts) -> Target:
    kinds, options = checks.kinds(), checks.option_names()
    sec.check_keys(*TARGET_KEYS, *options)
    kind = kinds[sec.value("check", to_choice(kinds, "check kind"))]
    host = sec.value("host", to_host)
    # A dns check asks port 53 whatever the service port; the catalog keys it the same way.
    port = sec.integer(
        "port", REQUIRED if kind.default_port is None else kind.default_port, min=1, max=65535
    )
    interval = sec.duration("interval", _DEFAULT_INTERVAL)
    timeout = sec.duration("timeout", min(_DEFAULT_TIMEOUT, interval))
    if timeout > interval:
        raise sec.error(
            f"must not exceed the interval ({interval:g}s), got {timeout:g}s", "timeout"
        )
    return Target.of(
        kind.read_options(sec, port, facts, known=options),
        host=host,
        port=port,
        check=kind.name,
        group=sec.string("group", "custom", pattern=_LABEL, what=_LABEL_WHAT),
        interval=interval,
        timeout=timeout,
        addresses=sec.value("addresses", to_choice(ADDRESS_POLICIES, "address policy"), "any"),
    )
