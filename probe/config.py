"""The probe's YAML config: identity, uplink, resolver, trust, schedule and what to check.

Every key is optional for `courierwatch check` and `up` (require_identity=False); the `probe`
daemon also needs site, collectors and transport. Targets are the chosen catalog groups plus the
config's own, which replace a catalog target with the same (host, port, check).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Final

from courierwatch.configfile import (
    BUILTIN,
    REQUIRED,
    Section,
    TransportConfig,
    digest,
    read_transport,
    read_yaml,
    to_address,
    to_choice,
    to_host,
    to_int,
    to_ip,
    to_str,
    unknown_name,
)
from courierwatch.probe import catalog
from courierwatch.probe.targets import Target

__all__ = ["DEFAULT_CHECK_KINDS", "ProbeConfig", "default_probe_id", "load_probe_config"]

DEFAULT_CHECK_KINDS: Final = ("dns", "tcp", "tls", "http")

# Site, probe id and group end up as Prometheus label values: keep them short and plain.
_LABEL = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LABEL_WHAT = "1 to 64 characters from A-Z a-z 0-9 . _ -"

# Options beyond host/port/check/group/interval/timeout, by the check kinds they apply to. A kind
# not listed here (a newer one passed in check_kinds) takes none of them.
_OPTIONS: Final = {
    "tls": frozenset({"sni", "alpn", "anchors"}),
    "http": frozenset({"tls", "path", "expect_status", "sni", "anchors"}),
}
_ALL_OPTIONS: Final = ("sni", "alpn", "anchors", "tls", "path", "expect_status")
_TARGET_KEYS: Final = ("host", "port", "check", "group", "interval", "timeout", *_ALL_OPTIONS)

_TOP_KEYS: Final = (
    "site", "probe_id", "collectors", "transport", "resolver", "trust", "schedule", "catalog",
    "targets",
)  # fmt: skip
_DEFAULT_INTERVAL: Final = 60.0
_DEFAULT_TIMEOUT: Final = 10.0
_NO_FILE_DIGEST: Final = digest(b"")


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
    trust_system: bool = True  # also trust the system store
    concurrency: int = 32  # checks running at once
    jitter: float = 0.1  # fraction of the interval each run may move, to spread the load
    targets: tuple[Target, ...] = ()
    digest: str = _NO_FILE_DIGEST  # SHA-256 of the config file, sent to the collector


def load_probe_config(
    path: str | None,
    *,
    require_identity: bool = True,
    check_kinds: Collection[str] = DEFAULT_CHECK_KINDS,
) -> ProbeConfig:
    """Read and validate a probe config file; path None gives the built-in defaults.

    Raises ConfigError, whose str() is one line naming file, line and field.
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
    transport = read_transport(root.section("transport"), required=require_identity)

    resolver = root.section("resolver")
    resolver.check_keys("nameservers", "port")
    trust = root.section("trust")
    trust.check_keys("anchors", "system")
    schedule = root.section("schedule")
    schedule.check_keys("concurrency", "jitter")

    return ProbeConfig(
        source=doc.source,
        site=site,
        probe_id=probe_id,
        collectors=collectors,
        transport=transport,
        nameservers=resolver.list_of("nameservers", to_ip),
        resolver_port=resolver.integer("port", 53, min=1, max=65535),
        trust_anchors=trust.files("anchors"),
        trust_system=trust.boolean("system", True),
        concurrency=schedule.integer("concurrency", 32, min=1, max=10000),
        jitter=schedule.number("jitter", 0.1, min=0, max=0.5),
        targets=_targets(root, check_kinds),
        digest=doc.digest,
    )


def _targets(root: Section, check_kinds: Collection[str]) -> tuple[Target, ...]:
    merged = {target.key: target for target in _catalog_targets(root.section("catalog"))}
    seen: dict[tuple[str, int, str], str] = {}
    for sec in root.sections("targets"):
        target = _custom_target(sec, check_kinds)
        if target.key in seen:
            host, port, check = target.key
            host = f"[{host}]" if ":" in host else host
            raise sec.error(f"duplicate target {host}:{port} {check} (also {seen[target.key]})")
        seen[target.key] = f"{sec.field}, line {sec.line}"
        merged[target.key] = target  # replaces a catalog target in place, or comes after them
    return tuple(merged.values())


def _catalog_targets(sec: Section) -> list[Target]:
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
    return catalog.targets(group_ids, settings)


def _custom_target(sec: Section, check_kinds: Collection[str]) -> Target:
    sec.check_keys(*_TARGET_KEYS)
    check = sec.value("check", to_choice(check_kinds, "check kind"))
    # Options of other kinds are mistakes, not something to ignore quietly.
    allowed = _OPTIONS.get(check, frozenset())
    for key in _ALL_OPTIONS:
        if key not in allowed and sec.has(key):
            raise sec.error(f"not valid for a {check} check", key)

    host = sec.value("host", to_host)
    # A dns check asks port 53 whatever the service port; the catalog keys it the same way.
    port = sec.integer("port", catalog.DNS_PORT if check == "dns" else REQUIRED, min=1, max=65535)
    interval = sec.duration("interval", _DEFAULT_INTERVAL)
    timeout = sec.duration("timeout", min(_DEFAULT_TIMEOUT, interval))
    if timeout > interval:
        raise sec.error(
            f"must not exceed the interval ({interval:g}s), got {timeout:g}s", "timeout"
        )

    tls = sec.boolean("tls", None)
    if check == "http" and not (tls if tls is not None else port != 80):
        for key in ("sni", "anchors"):
            if sec.has(key):
                raise sec.error("not valid for plain HTTP (tls: false, or port 80)", key)

    return Target(
        host=host,
        port=port,
        check=check,
        group=sec.string("group", "custom", pattern=_LABEL, what=_LABEL_WHAT),
        interval=interval,
        timeout=timeout,
        sni=sec.value("sni", to_host, None),
        alpn=sec.list_of("alpn", to_str(re.compile(r"[!-~]{1,255}"), "a protocol id such as h2")),
        anchors=sec.files("anchors"),
        tls=tls,
        path=sec.string("path", "/", pattern=re.compile(r"/\S*"), what="a path starting with /"),
        expect_status=sec.list_of("expect_status", to_int(100, 599)),
    )
