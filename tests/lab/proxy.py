"""The site's explicit HTTP proxy: Debian's tinyproxy, really running, in the router
namespace on the router's address of the site's link (so its own connections skip the site's
path faults, as a proxy in a DMZ does), resolving names with the site's resolver."""

from __future__ import annotations

from pathlib import Path

from lab.children import Child
from lab.netns import Namespace
from lab.site import PROXY_PORTS, Proxy

READY = r"Accepting connections"
USER, PASSWORD = "lab", "secret"  # for BasicAuth: the probe never has them


def config(proxy: Proxy, listen: str, port: int, pid_file: Path) -> str:
    lines = [
        f"Port {port}",
        f"Listen {listen}",
        "Timeout 10",
        "MaxClients 100",
        "LogLevel Info",  # Info: it says when it accepts connections
        "DisableViaHeader Yes",
        f'PidFile "{pid_file}"',
    ]
    if proxy.deny_ports:  # with any ConnectPort line, CONNECT goes only to the ports listed
        lines += [f"ConnectPort {p}" for p in PROXY_PORTS if p not in proxy.deny_ports]
    if proxy.auth:
        lines.append(f"BasicAuth {USER} {PASSWORD}")
    return "\n".join(lines) + "\n"


async def start(
    router: Namespace, proxy: Proxy, listen: str, port: int, resolver: str, directory: Path
) -> Child:
    """tinyproxy in `router`, answering on listen:port, with `resolver` in its resolv.conf
    (a mount namespace of its own binds it, as `ip netns exec` does for a namespace)."""
    conf, resolv = _write(directory, config(proxy, listen, port, directory / "tinyproxy.pid"),
                          f"nameserver {resolver}\n")  # fmt: skip
    argv = router.command(
        "unshare", "--mount", "--", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
        str(resolv), "tinyproxy", "-d", "-c", str(conf),
    )  # fmt: skip
    child, _ = await Child.start(argv, directory / "tinyproxy.log", ready=READY)
    return child


def _write(directory: Path, conf: str, resolv: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tinyproxy.conf").write_text(conf)
    (directory / "resolv.conf").write_text(resolv)
    return directory / "tinyproxy.conf", directory / "resolv.conf"
