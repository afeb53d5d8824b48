"""What a check kind is, declared once in its own module as `SPEC = KindSpec(...)`.

Everything else is derived from the specs: the registry (courierwatch.probe.checks), the
options a config's `targets:` and the catalog's endpoints accept and how each is parsed, target
expansion per address family and through the proxy (courierwatch.probe.targets), and the
README's option table (`option_table_markdown`).

An option fills the Target field of its name; an option of a kind from outside this package
has no field, so it lands in `Target.extra` and the kind reads it with `target.option(name)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from courierwatch.common.configfile import REQUIRED, Section
from courierwatch.probe.checks.base import Check

if TYPE_CHECKING:  # targets derives expansion from the specs, so the specs only name its type
    from courierwatch.probe.targets import Target

# What every target has whatever its kind (config keys), and the Target fields expansion sets:
# no option may take one of these names.
TARGET_KEYS: Final = ("host", "port", "check", "group", "interval", "timeout", "addresses")
_RESERVED: Final = frozenset({*TARGET_KEYS, "family", "via", "extra"})


@dataclass(frozen=True, slots=True)
class Facts:
    """What a kind's defaults may depend on: the catalog's Apple facts, as the config sets them."""

    courier_numbers: tuple[int, ...]  # apple.courier_numbers
    apple_root: str  # path of the bundled Apple Root CA


class OptionError(ValueError):
    """A cross-option rule of a kind is broken; `key` is the option to blame."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class Option:
    """One target option: its key, its parser, its default, and its words for the README."""

    name: str
    # Raw YAML value (or each item, when many) -> typed value; ValueError(message) if invalid.
    # None: a file path, resolved by whoever reads the file (a config: relative to itself).
    convert: Callable[[Any], Any] | None
    meaning: str  # README: what it does
    value: str  # README: what to write
    many: bool = False  # a YAML list of such values (an empty list means the default)
    default: Any = None
    default_from: Callable[[Facts], Any] | None = None  # a default that depends on the facts
    default_text: str = ""  # README: the default in words, where repr would not do
    required: bool = False

    def defaulting(
        self, default: Any = None, *, text: str = "", facts: Callable[[Facts], Any] | None = None
    ) -> Option:
        """The same option with a kind's own default (e.g. courier's ALPN)."""
        return dataclasses.replace(
            self, default=default, default_from=facts, default_text=text, required=False
        )

    def of(self, target: Target) -> Any:
        """This option of a target of its kind; for a target built by hand (as tests build
        them), whose options no spec has read, its plain default."""
        try:
            return target.option(self.name)
        except KeyError:
            return self.default

    def default_for(self, facts: Facts) -> Any:
        return self.default if self.default_from is None else self.default_from(facts)

    def read(self, sec: Section, facts: Facts, file: Callable[[Any], str]) -> Any:
        convert = file if self.convert is None else self.convert
        if self.many:
            values = sec.list_of(self.name, convert)
            if not values and self.required:
                raise sec.error("is required", self.name)
            return values or self.default_for(facts)
        return sec.value(self.name, convert, REQUIRED if self.required else self.default_for(facts))

    def parses_like(self, other: Option) -> bool:
        """One name is one option: kinds that share a name must parse it the same way."""
        return (self.convert, self.many) == (other.convert, other.many)

    def describe_default(self) -> str:
        if self.required:
            return "required"
        if self.default_text:
            return self.default_text
        if self.default in (None, ()):
            return "none"
        return f"`{self.default}`"


# Cross-option rules of a kind, once each option is read: (values by name, the names the target
# wrote, its port). They may fill values in, or raise OptionError.
Refine = Callable[[MutableMapping[str, Any], Collection[str], int], None]


@dataclass(frozen=True, slots=True)
class KindSpec:
    name: str  # what `check:` names
    run: Check
    summary: str  # README: what a working run proves
    options: tuple[Option, ...] = ()
    default_port: int | None = None  # None: a target must name its port
    per_family: bool = False  # dials an address: runs once per address family of the site
    via_proxy: bool = False  # also runs through the site's proxy (TCP only: CONNECT, or for
    # plain HTTP a request in absolute form)
    facts: tuple[str, ...] = ()  # the Result fields a run fills in (dotted paths)
    refine: Refine | None = None

    def __post_init__(self) -> None:
        names = [option.name for option in self.options]
        clash = sorted((set(names) & _RESERVED) | {n for n in names if names.count(n) > 1})
        if clash:
            raise ValueError(f"check kind {self.name}: option {clash[0]!r} is taken")

    def option(self, name: str) -> Option | None:
        return next((option for option in self.options if option.name == name), None)

    def read_options(
        self,
        sec: Section,
        port: int,
        facts: Facts,
        *,
        known: Iterable[str],
        file: Callable[[Any], str] | None = None,
    ) -> dict[str, Any]:
        """This kind's options from one target mapping, defaults filled in and the kind's rules
        applied. `known`: the option names the source accepts; one this kind does not take is
        an error (an option of another kind is a mistake, not something to ignore quietly).
        `file` turns a file option's value into a path (default: a readable file relative to
        the config file)."""
        for name in known:
            if sec.has(name) and self.option(name) is None:
                raise sec.error(f"not valid for a {self.name} check", name)
        values = {
            option.name: option.read(sec, facts, file or sec.readable) for option in self.options
        }
        if self.refine is not None:
            try:
                self.refine(values, {o.name for o in self.options if sec.has(o.name)}, port)
            except OptionError as error:
                raise sec.error(error.message, error.key) from None
        return values


def option_table_markdown(kinds: Iterable[KindSpec]) -> str:
    """The README's tables of check kinds and their options, rendered from the specs."""
    kinds = list(kinds)
    lines = [
        "| check | a working run proves | default port | per address family | via proxy |",
        "|---|---|---|---|---|",
    ]
    for kind in kinds:
        port = "none" if kind.default_port is None else str(kind.default_port)
        lines.append(
            f"| `{kind.name}` | {kind.summary} | {port} | {_yes(kind.per_family)} "
            f"| {_yes(kind.via_proxy)} |"
        )
    lines += ["", "| option | checks | value | default | meaning |", "|---|---|---|---|---|"]
    by_name: dict[str, list[tuple[KindSpec, Option]]] = {}
    for kind in kinds:
        for option in kind.options:
            by_name.setdefault(option.name, []).append((kind, option))
    for name, uses in by_name.items():
        first = uses[0][1]
        defaults: dict[str, list[str]] = {}
        for kind, option in uses:
            defaults.setdefault(option.describe_default(), []).append(kind.name)
        default = (
            next(iter(defaults))
            if len(defaults) == 1
            else "; ".join(f"{', '.join(names)}: {text}" for text, names in defaults.items())
        )
        lines.append(
            f"| `{name}` | {', '.join(kind.name for kind, _ in uses)} | {first.value} "
            f"| {default} | {first.meaning} |"
        )
    return "\n".join(lines) + "\n"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
