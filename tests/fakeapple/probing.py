"""Pointing the probe at the fake: the `apple` fixture, a check context, one-off runs, a
config document, and a record of every outgoing socket address (to prove a check never
dialled one)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from courierwatch.probe import catalog
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.net.proxy import ProxySettings
from courierwatch.probe.net.resolver import Resolver
from courierwatch.probe.runner import run_check
from courierwatch.probe.sanity import parse_ranges
from courierwatch.probe.targets import Target
from courierwatch.probe.trust import TrustStore
from courierwatch.v1 import courierwatch_pb2 as pb

from . import FakeApple

# The fake lives on 127.0.0.1, so tests accept loopback as "Apple's range"; 0.0.0.0 and
# private answers stay findings.
LAB_RANGES = ("127.0.0.0/8",)


@pytest.fixture(name="apple")
async def apple_fixture(tmp_path: Path) -> AsyncIterator[FakeApple]:
    """A running FakeApple for one test (tests/conftest.py loads this module as a plugin)."""
    async with FakeApple(tmp_path / "apple") as apple:
        yield apple


def check_context(
    apple: Any,
    *,
    site_anchors: tuple[str, ...] = (),
    proxy: bool = False,
    ranges: tuple[str, ...] = LAB_RANGES,
    also_trusted: tuple[str, ...] = (),
) -> CheckContext:
    """The fake CA (plus also_trusted) is the expected anchor; the system store is left out."""
    return CheckContext(
        resolver=Resolver([apple.host], apple.dns_port),
        trust=TrustStore([str(apple.ca_pem_path), *also_trusted], system=False, site=site_anchors),
        apple_ranges=parse_ranges(ranges),
        pop_pattern=catalog.apple().pop_pattern,
        proxy=ProxySettings(apple.host, apple.proxy_port) if proxy else None,
    )


async def check(ctx: CheckContext, **fields: Any) -> pb.Result:
    fields.setdefault("timeout", 2.0)
    return await run_check(Target(**fields), ctx)


def config_document(apple: Any, targets: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A probe config (as YAML data) with only `targets`, resolving and trusting the fake."""
    return {
        "resolver": {"nameservers": [apple.host], "port": apple.dns_port},
        "trust": {"anchors": [str(apple.ca_pem_path)], "system": False},
        "apple": {"ranges": list(LAB_RANGES)},
        "families": ["ipv4"],
        "catalog": {"groups": []},
        "targets": targets,
        **extra,
    }


_recording: list[list[tuple[Any, ...]]] = []


_OUTGOING = frozenset({"socket.connect", "socket.sendto"})


def _on_audit(event: str, args: tuple[Any, ...]) -> None:
    if event in _OUTGOING and _recording:
        _recording[-1].append(args[1])


_hooked = False


@contextlib.contextmanager
def recorded_connects() -> Iterator[list[tuple[Any, ...]]]:
    """Every address a socket connects or sends a datagram to inside the block (audit events
    see them all, whichever library made the socket)."""
    global _hooked
    if not _hooked:  # audit hooks cannot be removed: install one, active only while recording
        sys.addaudithook(_on_audit)
        _hooked = True
    seen: list[tuple[Any, ...]] = []
    _recording.append(seen)
    try:
        yield seen
    finally:
        _recording.pop()
