"""`families: auto` decides from what the host really has, and says so: each case runs in a
network namespace of its own (root only) with a veth pair and no way out, so nothing is sent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from courierwatch.probe import families

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip for a network namespace",
)

DETECT = (
    "import json; from courierwatch.probe import families; "
    "found = families.host_has_ipv6(); print(json.dumps([found.usable, found.evidence]))"
)


def detect_in_namespace(*commands: str) -> families.IPv6:
    """host_has_ipv6() in a fresh network namespace after `commands` (ip ...) set it up."""
    script = " && ".join([*commands, f"{sys.executable} -c '{DETECT}'"])
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    usable, evidence = json.loads(done.stdout)
    return families.IPv6(usable, evidence)


def veth_with(address: str, gateway: str) -> tuple[str, ...]:
    return (
        "ip link add cw0 type veth peer name cw1",
        "ip link set cw0 up",
        "ip link set cw1 up",
        f"ip -6 addr add {address}/64 dev cw0 nodad",
        f"ip -6 route add default via {gateway} dev cw0",
    )


def test_a_global_address_with_a_default_route_adds_ipv6() -> None:
    found = detect_in_namespace(*veth_with("2001:db8:5::5", "2001:db8:5::1"))
    assert families.auto(found) == families.Choice(
        ("ipv4", "ipv6"),
        "IPv6 too: global address 2001:db8:5::5 on cw0 with a route to the IPv6 internet",
    )


def test_no_ipv6_route_is_ipv4_only_and_says_so() -> None:
    found = detect_in_namespace("ip link set lo up")
    assert families.auto(found) == families.Choice(("ipv4",), "IPv4 only: no IPv6 default route")


def test_a_unique_local_source_is_not_the_ipv6_internet() -> None:
    found = detect_in_namespace(*veth_with("fd00:5::5", "fd00:5::1"))
    assert families.auto(found) == families.Choice(
        ("ipv4",),
        "IPv4 only: the IPv6 route leaves from fd00:5::5 on cw0, a unique-local address "
        "(no NAT66 for devices)",
    )


def test_a_bare_answer_gets_a_plain_reason() -> None:
    assert families.auto(False).reason == "IPv4 only: no IPv6 route"
    assert families.auto(True).families == ("ipv4", "ipv6")
