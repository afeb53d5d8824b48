"""Check kinds: one module each, declaring its `SPEC` (courierwatch.probe.checks.spec).

Every module of this package that has a SPEC is registered at import, so adding a kind is
adding a module; a kind from elsewhere (a plug-in, a test) is added with `register`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from types import MappingProxyType

from courierwatch.probe.checks import spec as _spec
from courierwatch.probe.checks.base import Check
from courierwatch.probe.checks.spec import KindSpec

__all__ = ["CHECKS", "KindSpec", "kinds", "option_names", "option_table_markdown", "register",
           "unregister"]  # fmt: skip

_SPECS: dict[str, KindSpec] = {}
# Each kind's run function by name: what the runner calls (tests may put their own in).
CHECKS: dict[str, Check] = {}


def register(spec: KindSpec) -> KindSpec:
    """Add a kind; its options must parse like any same-named option of the kinds already in."""
    if spec.name in _SPECS:
        raise ValueError(f"check kind {spec.name!r} is already registered")
    for option in spec.options:
        for other in _SPECS.values():
            same = other.option(option.name)
            if same is not None and not option.parses_like(same):
                raise ValueError(
                    f"check kind {spec.name}: option {option.name!r} parses unlike {other.name}'s"
                )
    _SPECS[spec.name] = spec
    CHECKS[spec.name] = spec.run
    return spec


def unregister(name: str) -> None:
    """Remove a kind added with `register` (a plug-in unloaded, a test cleaning up)."""
    del _SPECS[name]
    del CHECKS[name]


def kinds() -> Mapping[str, KindSpec]:
    """Every registered kind by name."""
    return MappingProxyType(_SPECS)


def option_names() -> tuple[str, ...]:
    """Every option of every registered kind, each once, in registration order."""
    return tuple(dict.fromkeys(o.name for spec in _SPECS.values() for o in spec.options))


def option_table_markdown() -> str:
    """The README's tables of the registered kinds and their options."""
    return _spec.option_table_markdown(_SPECS.values())


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        spec = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SPEC", None)
        if isinstance(spec, KindSpec):
            register(spec)


_discover()
