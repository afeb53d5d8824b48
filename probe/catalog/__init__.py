"""Apple's endpoints by service group: the bundled apple.yaml, turned into probe Targets.

The file is read and validated once, on first use. It is package data, yet a hand edit can still
break it, so every shape error names the field that is wrong.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from courierwatch.probe import pop, sanity
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
    "targets",
]

_HERE = Path(__file__).resolve().parent
_FILE = "apple.yaml"

# A dns target still needs a port for its key (host, port, check); 53 is where the question goes.
DNS_PORT = 53
# What a courier check offers and trusts unless told otherwise: what devices do.
COURIER_ALPN = "apns-security-v3"
APPLE_ROOT = "apple-root-ca.pem"

_KINDS = frozenset({"dns", "tcp", "tls", "http", "courier", "ntp"})
_DEFAULT_KIND = {80: "http", 443: "tls"}  # any other port: tcp
_ID = re.compile(r"[a-z][a-z0-9_]*\Z")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})+\Z")

_APPLE_KEYS = {"ranges", "courier_numbers", "pop_pattern"}
_GROUP_KEYS = {"id", "title", "critical", "interval", "timeout", "endpoints"}
_GROUP_OPTIONAL = {"addresses", "expect_issuer"}
_ENDPOINT_REQUIRED = {"host", "purpose"}
_ENDPOINT_OPTIONAL = {"ports", "check", "verified"}
# Options by the explicit check they need (a check chosen by port takes none).
_OPTIONS = {
    "tls": {"sni", "alpn", "require_alpn", "anchors"},
    "courier": {"alpn", "anchors"},
    "http": {"sni", "alpn", "anchors", "tls", "path", "expect_status"},
}
_ALL_OPTIONS = set().union(*_OPTIONS.values())


# A group outside the catalog has no schedule of its own (its targets carry theirs): these only
# fill the Group record.
_CUSTOM_INTERVAL = 60.0
_CUSTOM_TIMEOUT = 10.0


class CatalogError(ValueError):
    """apple.yaml does not have the expected shape."""


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
class _Endpoint:
    host: str
    ports: tuple[int, ...]
    check: str | None  # None: chosen per port
    sni: str | None
    alpn: tuple[str, ...]
    require_alpn: str | None
    anchors: tuple[str, ...]  # absolute paths
    tls: bool | None
    path: str
    expect_status: tuple[int, ...]
    purpose: str
    verified: bool


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
    numbers = catalog.apple.courier_numbers if courier_numbers is None else courier_numbers

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
            for target in _expand(endpoint, numbers, common):
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


def _expand(
    endpoint: _Endpoint, courier_numbers: tuple[int, ...], common: Mapping[str, Any]
) -> list[Target]:
    # A courier host is a logical name: it and its dns series dial the numbered names.
    numbers = courier_numbers if endpoint.check == "courier" else ()
    # Every host gets a dns series first: it carries the CNAME chain and tells "blocked by DNS"
    # apart from "blocked on the wire".
    out = [Target(endpoint.host, DNS_PORT, "dns", numbers=numbers, **common)]
    for port in endpoint.ports:
        out.append(
            Target(
                endpoint.host,
                port,
                endpoint.check or _DEFAULT_KIND.get(port, "tcp"),
                sni=endpoint.sni,
                alpn=endpoint.alpn,
                require_alpn=endpoint.require_alpn,
                anchors=endpoint.anchors,
                tls=endpoint.tls,
                path=endpoint.path,
                expect_status=endpoint.expect_status,
                numbers=numbers,
                **common,
            )
        )
    return out


@functools.cache
def _catalog() -> _Catalog:
    try:
        data = yaml.safe_load((_HERE / _FILE).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CatalogError(f"{_FILE}: not valid YAML: {exc}") from exc
    return _parse(data)


def _parse(data: object) -> _Catalog:
    top = _mapping(data, "top level", required={"version", "apple", "groups"})
    if top["version"] != 1:
        _fail("version", f"expected 1, got {top['version']!r}")
    raw_groups = top["groups"]
    if not isinstance(raw_groups, list) or not raw_groups:
        _fail("groups", "expected a non-empty list")
    entries: list[_GroupEntry] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_groups):
        entry = _parse_group(raw, f"groups[{index}]")
        if entry.group.id in seen:
            _fail(f"groups[{index}].id", f"duplicate group id {entry.group.id!r}")
        seen.add(entry.group.id)
        entries.append(entry)
    return _Catalog(_parse_apple(top["apple"]), tuple(entries))


def _parse_apple(raw: object) -> AppleFacts:
    fields = _mapping(raw, "apple", required=_APPLE_KEYS)
    ranges = _strings(fields["ranges"], "apple.ranges")
    pattern = _string(fields["pop_pattern"], "apple.pop_pattern")
    try:
        return AppleFacts(
            sanity.parse_ranges(ranges),
            parse_numbers(fields["courier_numbers"]),
            pop.compile_pattern(pattern),
        )
    except ValueError as exc:
        _fail("apple", str(exc))


def _parse_group(raw: object, where: str) -> _GroupEntry:
    fields = _mapping(raw, where, required=_GROUP_KEYS, optional=_GROUP_OPTIONAL)
    group_id = _string(fields["id"], f"{where}.id")
    if not _ID.match(group_id):
        _fail(f"{where}.id", f"{group_id!r} is not snake_case")
    where = f"groups[{group_id}]"  # the id is easier to find in the file than an index
    group = Group(
        id=group_id,
        title=_string(fields["title"], f"{where}.title"),
        critical=_boolean(fields["critical"], f"{where}.critical"),
        interval=_seconds(fields["interval"], f"{where}.interval"),
        timeout=_seconds(fields["timeout"], f"{where}.timeout"),
        apple_addresses=_addresses(fields.get("addresses", "public"), f"{where}.addresses"),
        expect_issuer=_strings(fields.get("expect_issuer", []), f"{where}.expect_issuer"),
    )
    if group.timeout > group.interval:
        _fail(f"{where}.timeout", "must not exceed the interval")
    raw_endpoints = fields["endpoints"]
    if not isinstance(raw_endpoints, list) or not raw_endpoints:
        _fail(f"{where}.endpoints", "expected a non-empty list")
    endpoints = tuple(
        _parse_endpoint(item, f"{where}.endpoints[{index}]")
        for index, item in enumerate(raw_endpoints)
    )
    keys: set[tuple[str, int, str]] = set()
    for index, endpoint in enumerate(endpoints):
        for target in _expand(endpoint, (), {})[1:]:
            if target.key in keys:
                _fail(f"{where}.endpoints[{index}]", f"{target.key} is listed twice in the group")
            keys.add(target.key)
    return _GroupEntry(group, endpoints)


def _parse_endpoint(raw: object, where: str) -> _Endpoint:
    if isinstance(raw, dict) and isinstance(raw.get("host"), str):
        where = f"{where} ({raw['host']})"  # a host is quicker to find in the file than an index
    optional = _ENDPOINT_OPTIONAL | _ALL_OPTIONS
    fields = _mapping(raw, where, required=_ENDPOINT_REQUIRED, optional=optional)
    host = _string(fields["host"], f"{where}.host")
    if "*" in host or "/" in host:
        _fail(f"{where}.host", "wildcards and address ranges cannot be probed; name one host")
    if not _HOST.match(host):
        _fail(f"{where}.host", "not a lower-case DNS name")

    check = fields.get("check")
    if check is not None and check not in _KINDS:
        _fail(f"{where}.check", f"{check!r} is not one of {', '.join(sorted(_KINDS))}")
    if check == "dns":
        if "ports" in fields:
            _fail(f"{where}.ports", "a dns check has no ports")
        ports: tuple[int, ...] = ()
    else:
        ports = _ports(fields.get("ports"), f"{where}.ports")
    allowed = _OPTIONS.get(check or "", set())
    misplaced = sorted((_ALL_OPTIONS & fields.keys()) - allowed)
    if misplaced:
        _fail(f"{where}.{misplaced[0]}", f"not allowed with check {check or '(chosen by port)'}")
    alpn = _strings(fields.get("alpn", []), f"{where}.alpn")
    require_alpn = fields.get("require_alpn")
    if require_alpn is not None and require_alpn not in alpn:
        _fail(f"{where}.require_alpn", "must be one of the protocols in alpn")

    anchors = _strings(fields.get("anchors", []), f"{where}.anchors")
    try:
        anchor_paths = tuple(anchor_path(name) for name in anchors)
    except FileNotFoundError as exc:
        _fail(f"{where}.anchors", str(exc))
    path = _string(fields.get("path", "/"), f"{where}.path")
    if not path.startswith("/"):
        _fail(f"{where}.path", "must start with /")
    statuses = fields.get("expect_status", [])
    if not isinstance(statuses, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in statuses
    ):
        _fail(f"{where}.expect_status", "expected a list of HTTP status codes")
    tls = fields.get("tls")
    return _Endpoint(
        host=host,
        ports=ports,
        check=check,
        sni=_string(fields["sni"], f"{where}.sni") if "sni" in fields else None,
        alpn=alpn,
        require_alpn=require_alpn,
        anchors=anchor_paths,
        tls=None if tls is None else _boolean(tls, f"{where}.tls"),
        path=path,
        expect_status=tuple(statuses),
        purpose=_string(fields["purpose"], f"{where}.purpose"),
        verified=_boolean(fields.get("verified", True), f"{where}.verified"),
    )


def _fail(where: str, problem: str) -> NoReturn:
    raise CatalogError(f"{_FILE}: {where}: {problem}")


def _mapping(
    value: object, where: str, required: set[str], optional: set[str] | frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(where, "expected a mapping")
    known = required | optional
    unknown = sorted(str(key) for key in value if key not in known)
    if unknown:
        _fail(f"{where}.{unknown[0]}", f"unknown field (known: {', '.join(sorted(known))})")
    missing = sorted(required - set(value))
    if missing:
        _fail(f"{where}.{missing[0]}", "missing")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(where, "expected a non-empty string")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        _fail(where, "expected a list of strings")
    return tuple(_string(item, f"{where}[{index}]") for index, item in enumerate(value))


def _boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        _fail(where, "expected true or false")
    return value


def _addresses(value: object, where: str) -> bool:
    if value not in ("apple", "public"):
        _fail(where, "expected apple or public")
    return value == "apple"


def _seconds(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        _fail(where, "expected a positive number of seconds")
    return float(value)


def _ports(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        _fail(where, "expected a non-empty list of ports (only check: dns has none)")
    for port in value:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            _fail(where, f"{port!r} is not a port number")
    if len(set(value)) != len(value):
        _fail(where, "a port is listed twice")
    return tuple(value)
