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

from courierwatch.probe.targets import Target

__all__ = [
    "DNS_PORT",
    "CatalogError",
    "Group",
    "UnknownGroupError",
    "anchor_path",
    "groups",
    "targets",
]

_HERE = Path(__file__).resolve().parent
_FILE = "apple.yaml"

# A dns target still needs a port for its key (host, port, check); 53 is where the question goes.
DNS_PORT = 53

_KINDS = frozenset({"dns", "tcp", "tls", "http"})
_DEFAULT_KIND = {80: "http", 443: "tls"}  # any other port: tcp
_ID = re.compile(r"[a-z][a-z0-9_]*\Z")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})+\Z")

_GROUP_KEYS = {"id", "title", "critical", "interval", "timeout", "endpoints"}
_ENDPOINT_REQUIRED = {"host", "purpose"}
_ENDPOINT_OPTIONAL = {"ports", "check", "verified"}
_TLS_OPTIONS = {"sni", "alpn", "anchors"}  # only with an explicit check: tls or http
_HTTP_OPTIONS = {"tls", "path", "expect_status"}  # only with check: http


class CatalogError(ValueError):
    """apple.yaml does not have the expected shape."""


class UnknownGroupError(KeyError):
    """A group id that the catalog does not have; the message lists the valid ones."""

    def __str__(self) -> str:
        # KeyError would show the message in quotes, as if it were the missing key.
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class Group:
    id: str
    title: str
    critical: bool  # an outage stops enrolment, management or push
    interval: float  # default seconds between runs
    timeout: float  # default seconds for one run


@dataclass(frozen=True, slots=True)
class _Endpoint:
    host: str
    ports: tuple[int, ...]
    check: str | None  # None: chosen per port
    sni: str | None
    alpn: tuple[str, ...]
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


def groups() -> dict[str, Group]:
    """Every catalog group by id, in file order (critical groups first)."""
    return {entry.group.id: entry.group for entry in _catalog()}


def targets(
    group_ids: Iterable[str] | None = None,
    settings: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> list[Target]:
    """Targets of the chosen groups (None: all), one per (host, port, check).

    settings maps a group id to (interval, timeout); None in either place keeps the catalog's
    value. A key shared by several chosen groups belongs to the one earliest in the file, whatever
    the order of group_ids, so the result does not depend on how a config lists them.
    """
    catalog = _catalog()
    known = [entry.group.id for entry in catalog]
    if isinstance(group_ids, str):  # a lone id would otherwise be read letter by letter
        group_ids = (group_ids,)
    wanted = set(known) if group_ids is None else set(group_ids)
    overrides = dict(settings or {})
    _require_known(wanted | set(overrides), known)

    found: dict[tuple[str, int, str], Target] = {}
    for entry in catalog:
        group = entry.group
        if group.id not in wanted:
            continue
        interval, timeout = overrides.get(group.id, (None, None))
        interval = _override(group.id, "interval", interval, group.interval)
        timeout = _override(group.id, "timeout", timeout, group.timeout)
        for endpoint in entry.endpoints:
            for target in _expand(endpoint, group.id, interval, timeout):
                found.setdefault(target.key, target)
    return list(found.values())


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


def _expand(endpoint: _Endpoint, group_id: str, interval: float, timeout: float) -> list[Target]:
    common = {"group": group_id, "interval": interval, "timeout": timeout}
    # Every host gets a dns series first: it carries the CNAME chain and tells "blocked by DNS"
    # apart from "blocked on the wire".
    out = [Target(endpoint.host, DNS_PORT, "dns", **common)]
    for port in endpoint.ports:
        out.append(
            Target(
                endpoint.host,
                port,
                endpoint.check or _DEFAULT_KIND.get(port, "tcp"),
                sni=endpoint.sni,
                alpn=endpoint.alpn,
                anchors=endpoint.anchors,
                tls=endpoint.tls,
                path=endpoint.path,
                expect_status=endpoint.expect_status,
                **common,
            )
        )
    return out


@functools.cache
def _catalog() -> tuple[_GroupEntry, ...]:
    try:
        data = yaml.safe_load((_HERE / _FILE).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CatalogError(f"{_FILE}: not valid YAML: {exc}") from exc
    return _parse(data)


def _parse(data: object) -> tuple[_GroupEntry, ...]:
    top = _mapping(data, "top level", required={"version", "groups"})
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
    return tuple(entries)


def _parse_group(raw: object, where: str) -> _GroupEntry:
    fields = _mapping(raw, where, required=_GROUP_KEYS)
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
        for target in _expand(endpoint, group.id, group.interval, group.timeout)[1:]:
            if target.key in keys:
                _fail(f"{where}.endpoints[{index}]", f"{target.key} is listed twice in the group")
            keys.add(target.key)
    return _GroupEntry(group, endpoints)


def _parse_endpoint(raw: object, where: str) -> _Endpoint:
    if isinstance(raw, dict) and isinstance(raw.get("host"), str):
        where = f"{where} ({raw['host']})"  # a host is quicker to find in the file than an index
    optional = _ENDPOINT_OPTIONAL | _TLS_OPTIONS | _HTTP_OPTIONS
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
    allowed = {"http": _TLS_OPTIONS | _HTTP_OPTIONS, "tls": _TLS_OPTIONS}.get(check or "", set())
    misplaced = sorted(((_TLS_OPTIONS | _HTTP_OPTIONS) & fields.keys()) - allowed)
    if misplaced:
        _fail(f"{where}.{misplaced[0]}", f"not allowed with check {check or '(chosen by port)'}")

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
        alpn=_strings(fields.get("alpn", []), f"{where}.alpn"),
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
