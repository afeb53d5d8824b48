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
import os
import re
import ssl
import stat
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

import yaml

from courierwatch.common import certs
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
    "format_duration",
    "from_text",
    "read_file",
    "read_transport",
    "read_yaml",
    "split_host_port",
    "to_address",
    "to_bool",
    "to_choice",
    "to_duration",
    "to_duration_between",
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

# Every file a config names is read whole, so each read is capped: a config (or a PEM bundle such
# as the system's, about 220 KB) is far below this, and /dev/zero or a stray log is not read into
# memory. Only regular files are read: a FIFO would block, a device never ends.
MAX_FILE_BYTES: Final = 1024 * 1024
# Shapes a config never needs and a hostile or mangled file may have: deeper nesting than any
# key path, more values than max_targets_per_probe targets have (aliases counted as often as they
# are used: "billion laughs"), and integers no field could take (int() of 5,000 digits refuses).
MAX_DEPTH: Final = 32
MAX_VALUES: Final = 100_000
MAX_DIGITS: Final = 30


def read_file(path: str | Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; ValueError(reason) otherwise."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just after).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(limit + 1)
    except OSError as exc:  # e.g. /proc/self/mem
        raise ValueError(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"larger than {limit // 1024} KiB")
    return data


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


_TIMESTAMP_TAG: Final = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG: Final = "tag:yaml.org,2002:int"
# Plain values, lists and mappings; `<<` merges (as a key). No dates, bytes, sets or objects:
# nothing in a config takes them, and each would reach a getter as a type it does not expect.
_PLAIN_TAGS: Final = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")
)


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


class _Refused(yaml.MarkedYAMLError):
    """A document shape a config does not take; `field` is where, as a Section names it."""

    def __init__(self, field: str, message: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem=message, problem_mark=mark)
        self.field = field


def _field(path: Iterable[Any]) -> str:
    """Parts of a key path ("catalog", "groups", 1) as a Section names it: catalog.groups[1]."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences remember their (1-based) source lines, which
    refuses nesting deeper than MAX_DEPTH, and for which a date is a plain string."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._path: list[Any] = []  # key path of the node being composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # SafeLoader's composer recurses per level: refuse depth before Python's stack does.
        part = index.value if isinstance(index, yaml.ScalarNode) else index
        self._path.append("?" if part is None and parent is not None else part)
        try:
            if len(self._path) > MAX_DEPTH:
                raise _Refused(
                    _field(p for p in self._path[1:] if p is not None),
                    f"nested more than {MAX_DEPTH} levels deep",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._path.pop()


def _tag_name(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!", 1)


def _vet(root: yaml.Node) -> None:
    """Refuse what the document must not hold, before anything is built from it: tags other than
    plain ones, huge integers, an alias inside what it names, and more than MAX_VALUES values
    with every alias expanded. Each node is looked at once: an alias adds the size it already has.
    """
    sizes: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded
    walking: set[int] = set()
    total = 0

    def walk(node: yaml.Node, path: tuple[Any, ...], line_node: yaml.Node, key: bool) -> None:
        nonlocal total
        here = id(node)
        field = _field(path)
        if here in walking:
            raise _Refused(field, "a YAML alias inside the value it names", line_node.start_mark)
        if here in sizes:  # an alias of a value seen before: it counts again
            total += sizes[here]
        else:
            tag = node.tag
            if tag not in _PLAIN_TAGS and not (tag == _MERGE_TAG and key):
                raise _Refused(
                    field,
                    f"the YAML tag {_tag_name(tag)} is not taken: write a plain value, "
                    "list or mapping",
                    node.start_mark,
                )
            if tag == _INT_TAG and len(node.value) > MAX_DIGITS:
                raise _Refused(
                    field, f"a number with more than {MAX_DIGITS} digits", node.start_mark
                )
            walking.add(here)
            before = total
            total += 1
            if isinstance(node, yaml.SequenceNode):
                for index, item in enumerate(node.value):
                    walk(item, (*path, index), item if id(item) not in sizes else line_node, False)
            elif isinstance(node, yaml.MappingNode):
                for key_node, value in node.value:
                    name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                    walk(key_node, path, key_node, True)
                    walk(value, (*path, name), key_node, False)
            walking.discard(here)
            sizes[here] = total - before
        if total > MAX_VALUES:
            raise _Refused(
                field,
                f"more than {MAX_VALUES} values (YAML aliases count each time they are used)",
                line_node.start_mark,
            )

    walk(root, (), root, False)


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
        data = read_file(path)
    except ValueError as exc:
        raise ConfigError(path, 0, "", f"cannot read: {exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(path, line, "", "not UTF-8 text") from None
    return Document(Section(_parse(text, path), path, base=Path(path).parent), digest(data))


def _parse(text: str, source: str) -> _Map:
    loader = LineLoader(text)  # a SafeLoader: no arbitrary objects
    try:
        node = loader.get_single_node()
        if node is not None:
            _vet(node)
        data = None if node is None else loader.construct_document(node)
    except _Refused as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise ConfigError(source, line, exc.field, str(exc.problem)) from None
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
        # What the vetting cannot see before construction; no position to report.
        raise ConfigError(source, 0, "", f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
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


def _finite(value: Any) -> float | None:
    """A YAML number as a finite float; None for anything else (bool is an int, too big an int
    has no float)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


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
        number = _finite(value)
        if (
            number is None
            or (positive and number <= 0)
            or (min is not None and number < min)
            or (max is not None and number > max)
        ):
            raise ValueError(f"must be {what}, got {describe(value)}")
        return number

    return convert


def to_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {describe(value)}")
    return value


_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+\s*")


def _seconds(value: Any) -> float | None:
    if isinstance(value, str) and len(value) <= 64 and _DURATION.fullmatch(value):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(value))
        return seconds if math.isfinite(seconds) else None
    return _finite(value)


def to_duration(value: Any) -> float:
    """Seconds > 0: a number of seconds, or a string such as "500ms", "30s", "2m", "1h30m", "7d"."""
    seconds = _seconds(value)
    if seconds is None or seconds <= 0:
        raise ValueError(
            "must be a duration > 0 such as 30s, 2m, 1h or 500ms (a number means seconds), "
            f"got {describe(value)}"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds in the largest unit that writes them whole: 0.1 -> 100ms, 90 -> 90s, 86400 -> 1d."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s" if seconds >= 1 else f"{seconds * 1000:g}ms"


def to_duration_between(low: float, high: float) -> Callable[[Any], float]:
    """A duration from `low` to `high` seconds; the error says both in units, as written."""
    bounds = f"from {format_duration(low)} to {format_duration(high)}"

    def convert(value: Any) -> float:
        seconds = _seconds(value)
        if seconds is None or not low <= seconds <= high:
            raise ValueError(
                f"must be a duration {bounds} (a number means seconds; units ms, s, m, h, d), "
                f"got {describe(value)}"
            )
        return seconds

    return convert


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


def join_host_port(host: str, port: int) -> str:
    """(host, port) -> 'host:port', an IPv6 address in brackets: what split_host_port reads."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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

    def duration(
        self, key: str, default: D = REQUIRED, *, within: tuple[float, float] | None = None
    ) -> float | D:
        """Seconds > 0, or `within` (low, high) seconds."""
        convert = to_duration if within is None else to_duration_between(*within)
        return self.value(key, convert, default)

    def boolean(self, key: str, default: D = REQUIRED) -> bool | D:
        return self.value(key, to_bool, default)

    def path(self, key: str, default: D = REQUIRED) -> str | D:
        """A path that need not exist yet (a file the program creates), '~' expanded and
        relative to the config file's directory; an existing directory is an error."""
        return self.value(key, self._writable, default)

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
        try:
            mode = path.stat().st_mode
        except OSError:  # not there yet (or not visible): whoever writes it will say
            return str(path)
        if stat.S_ISDIR(mode):
            raise ValueError(f"{str(path)!r} is a directory; name a file in it")
        if not stat.S_ISREG(mode):
            raise ValueError(f"{str(path)!r} is not a regular file")
        return str(path)

    def contents(self, value: Any) -> tuple[str, bytes]:
        """A file's path (relative to the config file's directory) and its bytes, read now
        (regular files of at most MAX_FILE_BYTES)."""
        path = self._resolve(value)
        try:
            return str(path), read_file(path)
        except ValueError as exc:
            raise ValueError(f"cannot read {str(path)!r}: {exc}") from None

    def readable(self, value: Any) -> str:
        """A converter: the path of a readable file, relative to the config file's directory."""
        return self.contents(value)[0]

    def pem(self, value: Any, load: Callable[[bytes], T], what: str) -> tuple[str, T]:
        """A file's path and what `load` makes of its bytes (ValueError or TypeError if they
        are not `what`, e.g. "a PEM certificate")."""
        path, data = self.contents(value)
        try:
            return path, load(data)
        except (ValueError, TypeError, ssl.SSLError):
            raise ValueError(f"{path!r} is not {what}") from None

    def certificate_file(self, value: Any) -> str:
        """A converter: the path of a PEM file of CA certificates, parsed now so that a wrong
        file is this error and not every TLS check failing its handshake."""
        return self.pem(value, pem_certificates, "a PEM certificate")[0]

    def certificate_files(self, key: str) -> tuple[str, ...]:
        return self.list_of(key, self.certificate_file)


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
    """The `transport` mapping. Unless insecure, ca, cert and key must be PEM files that fit.

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
    # Parsed now: a wrong or expired file must be a config error naming the field, not a gRPC
    # failure to bind, or a probe retrying for ever.
    now = datetime.datetime.now(datetime.UTC)
    ca, anchors = sec.value("ca", _loader(sec, pem_certificates, _CA_WHAT))
    cert, chain = sec.value("cert", _loader(sec, pem_certificates, "a PEM certificate"))
    expiry = _expiry(chain[0])
    if expiry < now:
        raise sec.error(f"the certificate expired on {expiry:%Y-%m-%d}", "cert")
    key = sec.value("key", lambda value: sec.contents(value)[0])
    problem = _key_problem(cert, key)
    if problem:
        raise sec.error(problem, "key")
    if not any(_expiry(a) >= now for a in anchors):
        raise sec.error("every certificate in it has expired", "ca")
    return TransportConfig(False, ca, cert, key)


_CA_WHAT: Final = "a PEM certificate (the CA that signed the other side)"


def _loader(sec: Section, load: Callable[[bytes], T], what: str) -> Callable[[Any], tuple[str, T]]:
    return lambda value: sec.pem(value, load, what)


# Certificates are read with the ssl module and common/certs rather than cryptography: every
# probe reads its config, and cryptography would cost each one some 10 MB of memory.
_PEM_CERTIFICATE: Final = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.S
)


def pem_certificates(data: bytes) -> list[certs.Certificate]:
    """Every certificate of a PEM file, as OpenSSL reads them (a ValueError or an
    ssl.SSLError for a file that holds none, or one OpenSSL refuses)."""
    blocks = [block.decode("ascii") for block in _PEM_CERTIFICATE.findall(data)]
    if not blocks:
        raise ValueError("no PEM certificate")
    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata="\n".join(blocks))
    return [certs.describe(ssl.PEM_cert_to_DER_cert(block)) for block in blocks]


def _expiry(certificate: certs.Certificate) -> datetime.datetime:
    return certificate.not_after.ToDatetime(tzinfo=datetime.UTC)


def _key_problem(cert: str, key: str) -> str | None:
    """Why OpenSSL will not take `key` (a path) with the certificate `cert`, or None."""
    try:
        # An encrypted key asks for a password: the empty one refuses it rather than a prompt.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as error:
        if "KEY_VALUES_MISMATCH" in str(error):
            return "this key does not belong to transport.cert"
        return f"{key!r} is not an unencrypted PEM private key"
    return None
