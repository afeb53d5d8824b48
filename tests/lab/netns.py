"""Network namespaces, veth links and iptables for the tests and benchmarks (root only).

A `Namespace` is created empty with its loopback up; `link` joins two namespaces (or one and
the root namespace) with a veth pair whose ends are created directly inside them, so no
interface name is ever taken in the root namespace but the root end of a root link. Names
carry the creating process's pid: `remove_stale` deletes what dead runs left behind (and ends
the processes still inside), so a crashed run never blocks the next.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

COMMAND_SECONDS = 30.0  # for one ip/iptables command
NETNS_ETC = Path("/etc/netns")  # `ip netns exec NAME` binds /etc/netns/NAME/* over /etc/*


class CommandError(RuntimeError):
    """An ip/iptables command failed: the command line and what it printed."""


def run(argv: Sequence[str], *, check: bool = True) -> str:
    """Run one command to completion (bounded); its stdout. CommandError names the command."""
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=COMMAND_SECONDS, check=False
    )
    if check and done.returncode != 0:
        raise CommandError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def ip(*args: str, check: bool = True) -> str:
    return run(["ip", *args], check=check)


@dataclass(slots=True)
class Namespace:
    """A network namespace of this name (created by `create`, gone after `delete`)."""

    name: str

    def command(self, *argv: str) -> list[str]:
        """argv run inside the namespace (with its /etc/netns/NAME files bound over /etc)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = True) -> str:
        return run(self.command(*argv), check=check)

    def ip(self, *args: str) -> str:
        return self.run("ip", *args)

    def iptables(self, *args: str, family: int = 4) -> None:
        self.run("iptables" if family == 4 else "ip6tables", "-w", "5", *args)

    def sysctl(self, **values: str) -> None:
        for key, value in values.items():
            self.run("sysctl", "-q", "-w", f"{key.replace('__', '.')}={value}")

    @property
    def etc(self) -> Path:
        return NETNS_ETC / self.name

    def create(self) -> None:
        ip("netns", "add", self.name)
        try:
            self.ip("link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise

    def delete(self) -> None:
        """Remove the namespace, ending what still runs in it; deleting it destroys its
        interfaces (and so the far ends of their veth pairs) and every rule inside."""
        _kill_inside(self.name)
        ip("netns", "delete", self.name, check=False)
        shutil.rmtree(self.etc, ignore_errors=True)


def link(a: Namespace | None, a_name: str, b: Namespace, b_name: str) -> None:
    """A veth pair, end `a_name` in `a` (None: the root namespace), `b_name` in `b`; both up.
    Each end is born in its namespace, so equal names in different namespaces never clash."""
    where_a = ["netns", a.name] if a else []
    ip("link", "add", "name", a_name, *where_a, "type", "veth", "peer", "name", b_name,
       "netns", b.name)  # fmt: skip
    b.ip("link", "set", b_name, "up")
    if a:
        a.ip("link", "set", a_name, "up")
    else:
        ip("link", "set", a_name, "up")


def _kill_inside(name: str) -> None:
    for pid in ip("netns", "pids", name, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def remove_stale(prefix: str) -> list[str]:
    """Delete the namespaces named `{prefix}{pid}...` whose pid is no longer alive (their
    creator died without cleaning up), with their /etc/netns directories; the names removed."""
    pattern = re.compile(rf"^({re.escape(prefix)}(\d+)\S*)", re.M)
    removed = []
    for match in pattern.finditer(ip("netns", "list", check=False)):
        if not Path(f"/proc/{match[2]}").exists():
            Namespace(match[1]).delete()
            removed.append(match[1])
    if NETNS_ETC.is_dir():
        for directory in NETNS_ETC.glob(f"{prefix}*"):
            found = re.match(rf"{re.escape(prefix)}(\d+)", directory.name)
            if found and not Path(f"/proc/{found[1]}").exists():
                shutil.rmtree(directory, ignore_errors=True)
    return removed
