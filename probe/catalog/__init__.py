"""Apple's endpoints by service group: the bundled apple.yaml, turned into probe Targets.

The file is read and validated once, on first use, the way a config file is
(courierwatch.common.configfile): a hand edit can still break it, so every error names
apple.yaml, the line and the field. An endpoint's options are those of its check kind, read by
the kind's own spec (courierwatch.probe.checks.spec) exactly as a config's `targets:` are; what
is the catalog's own is its shape: groups, endpoints with a list of ports, a check chosen by
port, a dns target for every host.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from courierwatch.common.configfile import (
    REQUIRED,
    ConfigError,
    Section,
    from_text,
    read_yaml,
    to_choice,
    to_int,
    to_str,
)
from courierwatch.probe import checks, pop, sanity
from courierwatch.probe.checks import dns, tls
from courierwatch.probe.checks.courier import ALPN as COURIER_ALPN
from courierwatch.probe.checks.spec import Facts, KindSpec
from courierwatch.probe.rotation import parse_numbers
from courierwatch.probe.targets import Target

__all__ = [
    "APPLE_ROOT",
    "COURIER_ALPN",
    "DNS_PORT",
    "AppleFacts",
    "CatalogError",
    "Group",
    "UnknownGroupError",
    "anchor_path",
    "apple",
    "describe",
    "groups",
    "kind_facts",
    "read_apple",
    "targets",
]

_HERE = Path(__file__).resolve().parent
_FILE = "apple.yaml"

DNS_PORT: Final = dns.PORT
APPLE_ROOT: Final = "apple-root-ca.pem"

_DEFAULT_KIND: Final = {80: "http", 443: "tls"}  # any other port: tcp
_ID = re.compile(r"[a-z][a-z0-9_]*")
_TEXT = re.compile(r"(?s).*\S.*")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})+\Z")
_RANGE = from_text(lambda text: sanity.parse_ranges([text])[0])

_TOP_KEYS: Final = ("version", "apple", "groups")
_APPLE_KEYS: Final = ("ranges", "courier_numbers", "pop_pattern")
_GROUP_KEYS: Final = (
    "id", "title", "critical", "interval", "timeout", "addresses", "expect_issuer", "endpoints",
)  # fmt: skip
_ENDPOINT_KEYS: Final = ("host", "ports", "check", "purpose", "verified")
# Kind options an endpoint does not write: the numbers of a numbered kind are
# apple.courier_numbers (which a config may override). expect_issuer is the group's, unless an
# endpoint served by another company (a CDN) names its own.
_NOT_PER_ENDPOINT: Final = frozenset({"numbers"})


# A group outside the catalog has no schedule of its own (its targets carry theirs): these only
# fill the Group record.
_CUSTOM_INTERVAL = 60.0
_CUSTOM_TIMEOUT = 10.0


class CatalogError(ConfigError, ValueError):
    """apple.yaml does not have the expected shape; str() is `file:line: field: message`."""


class UnknownGroupError(KeyError):
    """A group id that the catalog does not have; the message lists the valid ones."""

    def __str__(self) -> str:
        # KeyError would show the message in quotes, as if it were the missing key.
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class AppleFacts:
    """What answers from Apple look like: the catalog's `apple` section."""

    ranges: tuple[sanity.Network, ...]  # where Apple-owned names resolve
    courier_numbers: tuple[int, ...]  # N of N-courier.push.apple.com
    pop_pattern: re.Pattern[str]  # names the POP in a courier CNAME chain


@dataclass(frozen=True, slots=True)
class Group:
    id: str
    title: str
    critical: bool  # an outage stops enrolment, management or push
    interval: float  # default seconds between runs
    timeout: float  # default seconds for one run
    apple_addresses: bool = False  # its names must resolve into Apple's ranges
    expect_issuer: tuple[str, ...] = ()  # one of these must be in the chain's issuers


@dataclass(frozen=True, slots=True)
class _Port:
    port: int
    kind: KindSpec  # as written, or chosen by the port
    options: Mapping[str, Any]  # the kind's options, as its spec read them


@dataclass(frozen=True, slots=True)
class _Endpoint:
    host: str
    kind: KindSpec | None  # None: chosen per port
    ports: tuple[_Port, ...]
    purpose: str
    verified: bool
    own_issuers: bool = False  # names its own expect_issuer instead of the group's


@dataclass(frozen=True, slots=True)
class _GroupEntry:
    group: Group
    endpoints: tuple[_Endpoint, ...]


@dataclass(frozen=True, slots=True)
class _Catalog:
    apple: AppleFacts
    entries: tuple[_GroupEntry, ...]


def groups() -> dict[str, Group]:
    """Every catalog group by id, in file order (critical groups first)."""
    return {entry.group.id: entry.group for entry in _catalog().entries}


def describe(group_ids: Iterable[str]) -> tuple[Group, ...]:
    """The facts of each group named, in order: the catalog's own, or for a group the catalog
    does not have (a config's own targets) a critical one titled by its id, since such targets
    were added because they matter. The one place that decides a group's criticality: the
    report, the collector (through the probe's Hello) and so the status page and alerts read it."""
    known = groups()
    return tuple(
        known.get(gid) or Group(gid, gid, True, _CUSTOM_INTERVAL, _CUSTOM_TIMEOUT)
        for gid in dict.fromkeys(group_ids)
    )


def apple() -> AppleFacts:
    """The catalog's facts about Apple's network, defaults for the probe config's `apple`."""
    return _catalog().apple


def targets(
    group_ids: Iterable[str] | None = None,
    settings: Mapping[str, tuple[float | None, float | None]] | None = None,
    *,
    courier_numbers: tuple[int, ...] | None = None,
    apple_groups: Iterable[str] | None = None,
) -> list[Target]:
    """Targets of the chosen groups (None: all), one per (host, port, check).

    settings maps a group id to (interval, timeout); None in either place keeps the catalog's
    value. A key shared by several chosen groups belongs to the one earliest in the file, whatever
    the order of group_ids, so the result does not depend on how a config lists them.
    courier_numbers replaces apple.courier_numbers; apple_groups replaces the set of groups whose
    names must resolve into Apple's ranges (the others must resolve to public addresses).
    """
    catalog = _catalog()
    known = [entry.group.id for entry in catalog.entries]
    group_ids = _ids(group_ids)
    wanted = set(known) if group_ids is None else set(group_ids)
    overrides = dict(settings or {})
    apple_groups = _ids(apple_groups)
    owned = (
        {e.group.id for e in catalog.entries if e.group.apple_addresses}
        if apple_groups is None
        else set(apple_groups)
    )
    _require_known(wanted | set(overrides) | owned, known)
    facts = kind_facts(courier_numbers)

    found: dict[tuple[str, int, str], Target] = {}
    for entry in catalog.entries:
        group = entry.group
        if group.id not in wanted:
            continue
        interval, timeout = overrides.get(group.id, (None, None))
        common = {
            "group": group.id,
            "interval": _override(group.id, "interval", interval, group.interval),
            "timeout": _override(group.id, "timeout", timeout, group.timeout),
            "addresses": "apple" if group.id in owned else "public",
            "expect_issuer": group.expect_issuer,
        }
        for endpoint in entry.endpoints:
            for target in _expand(endpoint, facts, common):
                found.setdefault(target.key, target)
    return list(found.values())


def _ids(ids: Iterable[str] | None) -> Iterable[str] | None:
    # A lone id would otherwise be read letter by letter.
    return (ids,) if isinstance(ids, str) else ids


def anchor_path(name: str) -> str:
    """Absolute path of a PEM file bundled in this package, e.g. "apple-root-ca.pem"."""
    path = _HERE / name
    # Bare file names only: the catalog must not point outside its own package.
    if Path(name).name != name or path.suffix != ".pem" or not path.is_file():
        raise FileNotFoundError(f"no bundled trust anchor {name!r} in {_HERE}")
    return str(path)


def _require_known(ids: set[str], known: list[str]) -> None:
    unknown = sorted(ids - set(known))
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise UnknownGroupError(f"unknown catalog group {names}; valid groups: {', '.join(known)}")


def _override(group_id: str, name: str, value: float | None, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"group {group_id}: {name} must be a positive number of seconds")
    return float(value)


def _expand(endpoint: _Endpoint, facts: Facts, common: Mapping[str, Any]) -> list[Target]:
    # A numbered kind's host is a logical name: it and its dns series dial the numbered names.
    numbering = endpoint.kind.option("numbers") if endpoint.kind else None
    numbers = numbering.default_for(facts) if numbering else ()
    # Every host gets a dns series first: it carries the CNAME chain and tells "blocked by DNS"
    # apart from "blocked on the wire".
    out = [Target(endpoint.host, DNS_PORT, "dns", numbers=numbers, **common)]
    for port in endpoint.ports:
        options = {**port.options, "numbers": numbers, **common}
        if endpoint.own_issuers:
            options["expect_issuer"] = port.options["expect_issuer"]
        out.append(Target.of(options, host=endpoint.host, port=port.port, check=port.kind.name))
    return out


def kind_facts(courier_numbers: tuple[int, ...] | None = None) -> Facts:
    """What check kinds' defaults depend on (courier: the numbers and Apple Root CA);
    courier_numbers replaces apple.courier_numbers."""
    return _facts(apple().courier_numbers if courier_numbers is None else courier_numbers)


def _facts(courier_numbers: tuple[int, ...]) -> Facts:
    return Facts(courier_numbers=courier_numbers, apple_root=anchor_path(APPLE_ROOT))


@functools.cache
def _catalog() -> _Catalog:
    return _load(_HERE / _FILE)


def _load(path: Path) -> _Catalog:
    try:
        return _read(read_yaml(str(path)).root)
    except ConfigError as error:
        raise CatalogError(*error.args) from None


def _read(root: Section) -> _Catalog:
    root.check_keys(*_TOP_KEYS)
    version = root.integer("version")
    if version != 1:
        raise root.error(f"expected 1, got {version}", "version")
    apple_sec = _required(root, "apple")
    apple_sec.check_keys(*_APPLE_KEYS)
    facts = read_apple(apple_sec)
    group_secs = root.sections("groups")
    if not group_secs:
        raise root.error("must list at least one group", "groups")
    entries: dict[str, _GroupEntry] = {}
    for sec in group_secs:
        entry = _read_group(sec, _facts(facts.courier_numbers))
        if entry.group.id in entries:
            raise sec.error(f"duplicate group id {entry.group.id!r}", "id")
        entries[entry.group.id] = entry
    return _Catalog(facts, tuple(entries.values()))


def read_apple(sec: Section, defaults: AppleFacts | None = None) -> AppleFacts:
    """Facts about Apple's network from an `apple` mapping: the catalog's own (every key
    required), or a config's, where each key replaces one of `defaults`. The caller checks the
    keys (a config's mapping has one more)."""
    ranges = sec.list_of("ranges", _RANGE)
    if not ranges and (sec.has("ranges") or defaults is None):
        message = "must list at least one range" if sec.has("ranges") else "is required"
        raise sec.error(message, "ranges")
    return AppleFacts(
        ranges=ranges or _default(defaults, "ranges"),
        courier_numbers=sec.value(
            "courier_numbers", parse_numbers, _default(defaults, "courier_numbers")
        ),
        pop_pattern=sec.value(
            "pop_pattern", from_text(pop.compile_pattern), _default(defaults, "pop_pattern")
        ),
    )


def _default(defaults: AppleFacts | None, name: str) -> Any:
    return REQUIRED if defaults is None else getattr(defaults, name)


def _required(sec: Section, key: str) -> Section:
    if not sec.has(key):
        raise sec.error("is required", key)
    return sec.section(key)


def _read_group(sec: Section, facts: Facts) -> _GroupEntry:
    sec.check_keys(*_GROUP_KEYS)
    interval, timeout = sec.duration("interval"), sec.duration("timeout")
    if timeout > interval:
        raise sec.error(
            f"must not exceed the interval ({interval:g}s), got {timeout:g}s", "timeout"
        )
    group = Group(
        id=sec.string("id", pattern=_ID, what="a snake_case id"),
        title=sec.string("title", pattern=_TEXT, what="a non-empty string"),
        critical=sec.boolean("critical"),
        interval=interval,
        timeout=timeout,
        apple_addresses=sec.value("addresses", to_choice(("apple", "public"), "address policy"),
                                  "public") == "apple",
        expect_issuer=tls.EXPECT_ISSUER.read(sec, facts, sec.readable),  # as a target's
    )  # fmt: skip
    endpoint_secs = sec.sections("endpoints")
    if not endpoint_secs:
        raise sec.error("must list at least one endpoint", "endpoints")
    endpoints: list[_Endpoint] = []
    seen: set[tuple[str, int, str]] = set()
    for endpoint_sec in endpoint_secs:
        endpoint = _read_endpoint(endpoint_sec, facts)
        for port in endpoint.ports:
            key = (endpoint.host, port.port, port.kind.name)
            if key in seen:
                raise endpoint_sec.error(
                    f"{key[0]}:{key[1]} {key[2]} is listed twice in the group", "ports"
                )
            seen.add(key)
        endpoints.append(endpoint)
    return _GroupEntry(group, tuple(endpoints))


def _read_endpoint(sec: Section, facts: Facts) -> _Endpoint:
    options = tuple(name for name in checks.option_names() if name not in _NOT_PER_ENDPOINT)
    sec.check_keys(*_ENDPOINT_KEYS, *options)
    host = sec.value("host", _host)
    kinds = checks.kinds()
    named = sec.value("check", to_choice(kinds, "check kind"), None)
    kind = kinds[named] if named is not None else None
    if kind is None:
        for name in options:
            if sec.has(name):
                raise sec.error("not valid without a check (one chosen by port takes none)", name)
    ports: list[_Port] = []
    if kind is not None and kind.name == "dns":  # every host has its dns target anyway
        if sec.has("ports"):
            raise sec.error("a dns check has no ports", "ports")
        kind.read_options(sec, DNS_PORT, facts, known=options, file=_bundled)  # validates
    else:
        for number in _port_numbers(sec):
            chosen = kind or kinds[_DEFAULT_KIND.get(number, "tcp")]
            values = chosen.read_options(sec, number, facts, known=options, file=_bundled)
            ports.append(_Port(number, chosen, values))
    return _Endpoint(
        host=host,
        kind=kind,
        ports=tuple(ports),
        purpose=sec.string("purpose", pattern=_TEXT, what="a non-empty string"),
        verified=sec.boolean("verified", True),
        own_issuers=sec.has("expect_issuer"),
    )


def _port_numbers(sec: Section) -> tuple[int, ...]:
    numbers = sec.list_of("ports", to_int(1, 65535))
    if not numbers:
        raise sec.error("must list at least one port (only check: dns has none)", "ports")
    if len(set(numbers)) != len(numbers):
        raise sec.error("a port is listed twice", "ports")
    return numbers


def _host(value: Any) -> str:
    host = to_str()(value)
    if "*" in host or "/" in host:
        raise ValueError("wildcards and address ranges cannot be probed; name one host")
    if not _HOST.match(host):
        raise ValueError(f"must be a lower-case DNS name, got {host!r}")
    return host


def _bundled(value: Any) -> str:
    """An anchor the catalog names: a PEM file bundled in this package, by its bare name."""
    try:
        return anchor_path(to_str(_TEXT, "a file name")(value))
    except FileNotFoundError as error:
        raise ValueError(str(error)) from None
