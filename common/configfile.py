"""YAML config files read into typed values, where every error is one line: file, line, field.

Both roles read their YAML through here. The loader remembers the line of each mapping key and
sequence item, and a `Section` reads one mapping with typed getters that turn bad input into a
`ConfigError` such as

    probe.yaml:12: targets[3].port: must be an integer from 1 to 65535, got 'abc'

so a config mistake never ends in a traceback.
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
import ipaddress
import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from courierwatch.common.addresses import is_ip

__all__ = [
    "BUILTIN",
    "REQUIRED",
    "ConfigError",
    "Document",
    "LineLoader",
    "Section",
    "TransportConfig",
    "describe",
    "digest",
    "from_text",
    "read_transport",
    "read_yaml",
    "split_host_port",
    "to_address",
    "to_bool",
    "to_choice",
    "to_duration",
    "to_float",
    "to_host",
    "to_int",
    "to_ip",
    "to_str",
    "unknown_name",
    "valid_host",
]

BUILTIN: Final = "<built-in defaults>"  # the source name of a config read from no file

T = TypeVar("T")
D = TypeVar("D")


class ConfigError(Exception):
    """Bad configuration; str() is one line: `file:line: field: message`.

    line 0 (unknown, or no file at all) and an empty field are left out of the line.
    """

    def __init__(self, path: str, line: int, field: str, message: str) -> None:
        # All four as args, so the exception pickles and compares like any other.
        super().__init__(path, line, field, message)
        self.path = path
        self.line = line
        self.field = field
        self.message = message

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line > 0 else self.path
        field = f"{self.field}: " if self.field else ""
        return f"{where}: {field}{self.message}".replace("\n", " ")


# --- loading -------------------------------------------------------------------------------------


class _Map(dict[Any, Any]):
    """A YAML mapping that knows its own line and the line of each key."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}
        self.duplicate: tuple[Any, int] | None = None  # first key written twice, and where


class _Seq(list[Any]):
    """A YAML sequence that knows its own line and the line of each item."""

    def __init__(self, line: int, item_lines: list[int]) -> None:
        super().__init__()
        self.line = line
        self.item_lines = item_lines


class LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences remember their (1-based) source lines."""


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_map(loader: LineLoader, node: yaml.MappingNode) -> Iterator[_Map]:
    data = _Map(_line(node))
    yield data  # empty first, like SafeLoader, so an alias inside the mapping can refer to it
    own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
    loader.flatten_mapping(node)  # `<<: *base` entries come first; the mapping's own keys win
    first_own = len(node.value) - own
    own_keys: set[Any] = set()
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if index >= first_own:
            # YAML keeps the last of two equal keys silently; in a config that is a mistake.
            if key in own_keys and data.duplicate is None:
                data.duplicate = (key, _line(key_node))
            own_keys.add(key)
        data.key_lines[key] = _line(key_node)
        data[key] = loader.construct_object(value_node, deep=True)


def _construct_seq(loader: LineLoader, node: yaml.SequenceNode) -> Iterator[_Seq]:
    data = _Seq(_line(node), [_line(item) for item in node.value])
    yield data
    data.extend(loader.construct_object(item, deep=True) for item in node.value)


LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def digest(data: bytes) -> str:
    """SHA-256 hex of a config file's bytes (b"" for built-in defaults): tells configs apart."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Document:
    """A whole config file: its top-level mapping and the digest of its bytes."""

    root: Section
    digest: str

    @property
    def source(self) -> str:
        return self.root.source


def read_yaml(path: str | None) -> Document:
    """Read and parse one config file; None gives an empty document (built-in defaults)."""
    if path is None:
        return Document(Section(_Map(0), BUILTIN), digest(b""))
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(path, 0, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(path, line, "", "not UTF-8 text") from None
    return Document(Section(_parse(text, path), path, base=Path(path).parent), digest(data))


def _parse(text: str, source: str) -> _Map:
    try:
        data = yaml.load(text, Loader=LineLoader)  # a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError(source, line, "", f"invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:  # a control character; position counts characters
        line = text[: exc.position].count("\n") + 1
        problem = f"character #x{exc.character:04x} is not allowed"
        raise ConfigError(source, line, "", f"invalid YAML: {problem}") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # E.g. a timestamp-shaped value that is no date (2024-02-30): no position to report.
        raise ConfigError(source, 0, "", f"invalid YAML: {exc}") from None
    if data is None:  # empty file, or only comments
        return _Map(0)
    if not isinstance(data, _Map):
        line = data.line if isinstance(data, _Seq) else 1
        raise ConfigError(
            source, line, "", f"the top level must be a mapping, got {describe(data)}"
        )
    return data


# --- value converters: raw YAML value -> typed value, ValueError(message) when invalid -----------


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


# Typed Any so that `default: str = REQUIRED` type-checks; getters test identity.
REQUIRED: Any = _Required()


def describe(value: Any) -> str:
    """A raw value for an error message: short, and in YAML words where Python's differ."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bounds(what: str, low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{what} from {low:g} to {high:g}"
    if low is not None:
        return f"{what} >= {low:g}"
    if high is not None:
        return f"{what} <= {high:g}"
    return what


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)  # bool is an int


def to_str(pattern: re.Pattern[str] | None = None, what: str = "a string") -> Callable[[Any], str]:
    """A string, matching all of `pattern` if given; `what` describes it in the error."""

    def convert(value: Any) -> str:
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            raise ValueError(f"must be {what}, got {describe(value)}")
        return value

    return convert


def from_text(parse: Callable[[str], T]) -> Callable[[Any], T]:
    """A converter for a parser of text (ValueError if invalid): another YAML type is an error
    naming what was written, not a crash."""

    def convert(value: Any) -> T:
        return parse(to_str()(value))

    return convert


def to_int(min: int | None = None, max: int | None = None) -> Callable[[Any], int]:
    what = _bounds("an integer", min, max)

    def convert(value: Any) -> int:
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or (min is not None and value < min)
            or (max is not None and value > max)
        ):
            raise ValueError(f"must be {what}, got {describe(value)}")
        return value

    return convert


def to_float(
    min: float | None = None,
    max: float | None = None,
    *,
    positive: bool = False,  # min excluded: "> 0" rather than ">= 0"
) -> Callable[[Any], float]:
    what = "a number > 0" if positive and max is None else _bounds("a number", min, max)

    def convert(value: Any) -> float:
        if (
            not _is_number(value)
            or not math.isfinite(value)
            or (positive and value <= 0)
            or (min is not None and value < min)
            or (max is not None and value > max)
        ):
            raise ValueError(f"must be {what}, got {describe(value)}")
        return float(value)

    return convert


def to_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {describe(value)}")
    return value


_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+\s*")


def to_duration(value: Any) -> float:
    """Seconds > 0: a number of seconds, or a string such as "500ms", "30s", "2m", "1h30m", "7d"."""
    if _is_number(value):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.fullmatch(value):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(value))
    else:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(
            "must be a duration > 0 such as 30s, 2m, 1h or 500ms (a number means seconds), "
            f"got {describe(value)}"
        )
    return seconds


def _did_you_mean(name: Any, choices: Iterable[str], *, list_all: bool) -> str:
    """' (did you mean 'x'?)' for a near miss; the valid names when there is none or list_all."""
    valid = sorted(choices)
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f"did you mean {close[0]!r}?" if close else ""
    if list_all or not close:
        hint = f"{hint} valid: {', '.join(valid)}".strip() if valid else hint
    return f" ({hint})" if hint else ""


def unknown_name(what: str, name: Any, choices: Collection[str]) -> str:
    """'unknown <what> 'x' (did you mean 'y'? valid: ...)': for names from a closed set."""
    return f"unknown {what} {describe(name)}{_did_you_mean(name, choices, list_all=True)}"


def to_choice(choices: Collection[str], what: str) -> Callable[[Any], str]:
    """One of a closed set of names, e.g. check kinds; the error lists them all."""

    def convert(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(unknown_name(what, value, choices))
        return value

    return convert


_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def valid_host(host: str) -> bool:
    """A DNS name (an optional trailing dot) or an IP address, without brackets or port."""
    if is_ip(host):
        return True
    name = host.removesuffix(".")
    labels = name.split(".")
    # An all-digit last label would make 1.2.3.999 a "name"; no real top-level domain is digits.
    return (
        0 < len(name) <= 253
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


def to_host(value: Any) -> str:
    if not isinstance(value, str) or not valid_host(value):
        raise ValueError(f"must be a host name or IP address, got {describe(value)}")
    return value


def to_ip(value: Any) -> str:
    """An IP address, normalised (so "::0001" and "::1" are one nameserver)."""
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            pass
    raise ValueError(f"must be an IP address, got {describe(value)}")


_PORT = re.compile(r"[0-9]{1,5}")


def split_host_port(text: str, *, allow_zero: bool = False) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port), host without brackets; ValueError if not."""
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]:")
        valid = bool(bracket) and ":" in host and is_ip(host)
    else:
        host, colon, port = text.rpartition(":")
        valid = bool(colon) and ":" not in host and valid_host(host)  # bare v6 is ambiguous
    low = 0 if allow_zero else 1
    if not (valid and _PORT.fullmatch(port) and low <= int(port) <= 65535):
        raise ValueError(f"{text!r} is not host:port")
    return host, int(port)


def to_address(*, allow_zero: bool = False) -> Callable[[Any], str]:
    """A 'host:port' string ('[v6]:port' for IPv6), kept as written; port 0 only if allowed."""
    low = 0 if allow_zero else 1
    what = f"host:port with a port from {low} to 65535 (IPv6 as [address]:port)"

    def convert(value: Any) -> str:
        if isinstance(value, str):
            try:
                split_host_port(value, allow_zero=allow_zero)
                return value
            except ValueError:
                pass
        raise ValueError(f"must be {what}, got {describe(value)}")

    return convert


# --- reading a mapping ----------------------------------------------------------------------------


class Section:
    """One mapping of the config being read.

    Getters take the key and a default (REQUIRED: absent is an error). An explicit null counts
    as absent, so `ca:` with no value reads like a commented-out line. Errors carry the field
    path (`targets[3].port`) and the line of the key, or of this mapping when the key is absent.
    """

    def __init__(
        self,
        data: _Map,
        source: str,
        field: str = "",
        base: Path | None = None,
    ) -> None:
        self._data = data
        self.source = source
        self.field = field  # path of this mapping from the top, "" at the top
        self.line = data.line
        self._base = base  # relative file paths are relative to the config file's directory
        if data.duplicate is not None:
            key, line = data.duplicate
            raise self.error(f"duplicate key {describe(key)}", line=line)

    # -- locating --

    def path_of(self, key: str) -> str:
        return f"{self.field}.{key}" if self.field else key

    def line_of(self, key: str) -> int:
        """Line of the key if it is written, else of this mapping (missing keys belong here)."""
        return self._data.key_lines.get(key, self.line)

    def error(
        self, message: str, key: str | None = None, *, line: int | None = None
    ) -> ConfigError:
        """A ConfigError for this mapping, or for one of its keys."""
        field = self.path_of(key) if key is not None else self.field
        if line is None:
            line = self.line_of(key) if key is not None else self.line
        return ConfigError(self.source, line, field, message)

    # -- keys --

    def check_keys(self, *allowed: str) -> None:
        """Reject keys not in `allowed`, the first in file order, with a close match if any.

        Called before reading, so a misspelt key is reported rather than what it left missing.
        """
        for key in sorted(self._data, key=lambda k: self._data.key_lines[k]):
            if key not in allowed:
                hint = _did_you_mean(key, allowed, list_all=False)
                raise self.error(f"unknown key {describe(key)}{hint}", line=self.line_of(key))

    def names(self) -> list[str]:
        """The keys as written, for mappings keyed by name (e.g. catalog group ids)."""
        for key in self._data:
            if not isinstance(key, str):
                raise self.error(f"keys must be names, got {describe(key)}", line=self.line_of(key))
        return list(self._data)

    def has(self, key: str) -> bool:
        return self._data.get(key) is not None

    # -- scalars --

    def value(self, key: str, convert: Callable[[Any], T], default: D = REQUIRED) -> T | D:
        """The key's value through `convert` (which raises ValueError(message) if invalid)."""
        raw = self._data.get(key)
        if raw is None:
            if default is REQUIRED:
                raise self.error("is required", key)
            return default
        try:
            return convert(raw)
        except ValueError as exc:
            raise self.error(str(exc), key) from None

    def string(
        self,
        key: str,
        default: D = REQUIRED,
        *,
        pattern: re.Pattern[str] | None = None,
        what: str = "a string",
    ) -> str | D:
        return self.value(key, to_str(pattern, what), default)

    def integer(
        self,
        key: str,
        default: D = REQUIRED,
        *,
        min: int | None = None,
        max: int | None = None,
    ) -> int | D:
        return self.value(key, to_int(min, max), default)

    def number(
        self,
        key: str,
        default: D = REQUIRED,
        *,
        min: float | None = None,
        max: float | None = None,
        positive: bool = False,
    ) -> float | D:
        return self.value(key, to_float(min, max, positive=positive), default)

    def duration(self, key: str, default: D = REQUIRED) -> float | D:
        return self.value(key, to_duration, default)

    def boolean(self, key: str, default: D = REQUIRED) -> bool | D:
        return self.value(key, to_bool, default)

    def path(self, key: str, default: D = REQUIRED) -> str | D:
        """A path that need not exist yet (a file the program creates), '~' expanded and
        relative to the config file's directory; an existing directory is an error."""
        return self.value(key, self._writable, default)

    def file(self, key: str, default: D = REQUIRED) -> str | D:
        """Path of a readable file; relative paths are taken from the config file's directory."""
        return self.value(key, self.readable, default)

    # -- lists --

    def list_of(self, key: str, convert: Callable[[Any], T]) -> tuple[T, ...]:
        """Each item through `convert`; absent is (). Item errors name `key[i]` and its line."""
        raw = self._data.get(key)
        if raw is None:
            return ()
        if not isinstance(raw, _Seq):
            raise self.error(f"must be a list, got {describe(raw)}", key)
        out: list[T] = []
        for index, (item, line) in enumerate(zip(raw, raw.item_lines, strict=True)):
            try:
                out.append(convert(item))
            except ValueError as exc:
                raise self.error(str(exc), f"{key}[{index}]", line=line) from None
        return tuple(out)

    def strings(self, key: str) -> tuple[str, ...]:
        return self.list_of(key, to_str())

    def files(self, key: str) -> tuple[str, ...]:
        return self.list_of(key, self.readable)

    # -- nesting --

    def section(self, key: str) -> Section:
        """The mapping under key; an empty one (at this mapping's line) if absent."""
        raw = self._data.get(key)
        if raw is None:
            raw = _Map(self.line_of(key))
        elif not isinstance(raw, _Map):
            raise self.error(f"must be a mapping, got {describe(raw)}", key)
        return Section(raw, self.source, self.path_of(key), self._base)

    def sections(self, key: str) -> list[Section]:
        """The list of mappings under key, e.g. targets; [] if absent."""
        raw = self._data.get(key)
        if raw is None:
            return []
        if not isinstance(raw, _Seq):
            raise self.error(f"must be a list, got {describe(raw)}", key)
        out = []
        for index, (item, line) in enumerate(zip(raw, raw.item_lines, strict=True)):
            field = f"{self.path_of(key)}[{index}]"
            if not isinstance(item, _Map):
                raise ConfigError(
                    self.source, line, field, f"must be a mapping, got {describe(item)}"
                )
            out.append(Section(item, self.source, field, self._base))
        return out

    def _resolve(self, value: Any) -> Path:
        if not isinstance(value, str) or not value:
            raise ValueError(f"must be a file path, got {describe(value)}")
        path = Path(value).expanduser()
        if not path.is_absolute() and self._base is not None:
            path = self._base / path
        return path

    def _writable(self, value: Any) -> str:
        path = self._resolve(value)
        if path.is_dir():
            raise ValueError(f"{str(path)!r} is a directory; name a file in it")
        return str(path)

    def readable(self, value: Any) -> str:
        """A converter: the path of a readable file, relative to the config file's directory."""
        path = self._resolve(value)
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
        return str(path)


# --- shared pieces --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """gRPC transport between probe and collector: mTLS files, or the explicit plaintext mode."""

    insecure: bool = False
    ca: str | None = None  # PEM bundle that signed the other side's certificate
    cert: str | None = None  # own certificate chain (PEM)
    key: str | None = None  # own private key (PEM)


_TRANSPORT_FILES: Final = ("ca", "cert", "key")


def read_transport(
    sec: Section, *, required: bool = True, insecure: bool = False
) -> TransportConfig:
    """The `transport` mapping. Unless insecure, ca, cert and key must be readable files.

    required=False (a role that sends nothing) only checks the shape. With insecure: true (or
    insecure=True: the command line's --insecure) the files are unused, so they are neither
    required nor opened.
    """
    sec.check_keys("insecure", *_TRANSPORT_FILES)
    insecure = insecure or sec.boolean("insecure", False)
    if insecure or not required:
        ca, cert, key = (sec.string(name, None) for name in _TRANSPORT_FILES)
        return TransportConfig(insecure, ca, cert, key)
    for name in _TRANSPORT_FILES:
        if not sec.has(name):
            raise sec.error("mTLS material is required unless transport.insecure is true", name)
    transport = TransportConfig(False, sec.file("ca"), sec.file("cert"), sec.file("key"))
    _check_tls_material(sec, transport)
    return transport


def _check_tls_material(sec: Section, transport: TransportConfig) -> None:
    """Parse the files now: a wrong or expired file must be a config error naming the field,
    not a gRPC failure to bind, or a probe retrying for ever."""
    assert transport.ca and transport.cert and transport.key
    now = datetime.datetime.now(datetime.UTC)
    try:
        anchors = x509.load_pem_x509_certificates(Path(transport.ca).read_bytes())
    except ValueError:
        raise sec.error("not a PEM certificate (the CA that signed the other side)", "ca") from None
    try:
        own = x509.load_pem_x509_certificates(Path(transport.cert).read_bytes())[0]
    except ValueError:
        raise sec.error("not a PEM certificate", "cert") from None
    if own.not_valid_after_utc < now:
        raise sec.error(f"the certificate expired on {own.not_valid_after_utc:%Y-%m-%d}", "cert")
    try:
        key = serialization.load_pem_private_key(Path(transport.key).read_bytes(), None)
    except (ValueError, TypeError):
        raise sec.error("not an unencrypted PEM private key", "key") from None
    if key.public_key().public_bytes(*_SPKI) != own.public_key().public_bytes(*_SPKI):
        raise sec.error("this key does not belong to transport.cert", "key")
    if not any(a.not_valid_after_utc >= now for a in anchors):
        raise sec.error("every certificate in it has expired", "ca")


_SPKI: Final = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
