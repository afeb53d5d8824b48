"""The house plan, enforced: no import runs back up the data flow (README, Architecture).

Each rule names a room (a package prefix) and the rooms it must never import. Imports are
read from the source with `ast`, so a lazy import inside a function counts as much as one at
the top of a module.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Folder on disk -> import package, as pyproject.toml maps them.
ROOMS = {
    "common": "courierwatch.common",
    "courierwatch": "courierwatch",
    "probe": "courierwatch.probe",
    "collector": "courierwatch.collector",
    "discover": "courierwatch.discover",
}
COMMAND_LINE = ("courierwatch.cli", "courierwatch.allinone", "courierwatch.pki")
PROBE_UPPER = (
    "courierwatch.probe.config",
    "courierwatch.probe.context",
    "courierwatch.probe.daemon",
    "courierwatch.probe.oneshot",
    "courierwatch.probe.runner",
    "courierwatch.probe.scheduler",
    "courierwatch.probe.spool",
    "courierwatch.probe.uplink",
)
# room -> what it must not import (prefixes)
FORBIDDEN = {
    "courierwatch.common": ("courierwatch.probe", "courierwatch.collector", *COMMAND_LINE),
    "courierwatch.probe.failures": ("courierwatch.probe.", "courierwatch.collector"),
    "courierwatch.probe.net": (
        "courierwatch.probe.checks",
        "courierwatch.probe.catalog",
        *PROBE_UPPER,
        "courierwatch.collector",
        *COMMAND_LINE,
    ),
    # The catalog is read through the kinds' specs, so a kind never reads the catalog.
    "courierwatch.probe.checks": (
        "courierwatch.probe.catalog",
        *PROBE_UPPER,
        "courierwatch.collector",
        *COMMAND_LINE,
    ),
    "courierwatch.probe.catalog": (*PROBE_UPPER, "courierwatch.collector", *COMMAND_LINE),
    # The probe may read DNS logs with discover's readers; discover never reaches back up.
    "courierwatch.probe": ("courierwatch.collector", *COMMAND_LINE),
    "courierwatch.collector": ("courierwatch.probe", "courierwatch.discover", *COMMAND_LINE),
    "courierwatch.discover": ("courierwatch.collector", *PROBE_UPPER, *COMMAND_LINE),
}


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [ROOMS[folder], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path, name: str) -> set[str]:
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def sources() -> list[Path]:
    return sorted(p for folder in ROOMS for p in (ROOT / folder).rglob("*.py"))


def rules_for(name: str) -> tuple[str, ...]:
    """Every rule whose room contains `name` applies (the most specific and the general)."""
    return tuple(
        bad
        for room, forbidden in FORBIDDEN.items()
        if name == room or name.startswith(room + ".")
        for bad in forbidden
    )


def matches(module: str, prefix: str) -> bool:
    if prefix.endswith("."):
        return module.startswith(prefix)
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_runs_back_up_the_data_flow(path):
    name = module_name(path)
    bad = sorted(
        module
        for module in imported(path, name)
        for prefix in rules_for(name)
        if matches(module, prefix) and not matches(module, name)
    )
    assert not bad, f"{name} imports {bad}"


def test_the_rules_catch_a_back_arrow(tmp_path):
    """The checker itself can fail: a net module importing a check kind is reported."""
    module = tmp_path / "resolver.py"
    module.write_text("from courierwatch.probe.checks.base import CheckContext\n")
    found = imported(module, "courierwatch.probe.net.resolver")
    assert any(
        matches(m, p) for m in found for p in rules_for("courierwatch.probe.net.resolver")
    )
