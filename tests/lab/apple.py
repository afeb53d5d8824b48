"""The apple namespace's process: the fake Apple's servers on Apple's real ports, and one
resolver and one clock per site. Run by the lab inside the apple namespace:

    python -m lab.apple SPEC.json

SPEC names the PKI directory, the control socket and the sites ([{n, dns, pop, ntp_offset,
unresolved}]).
The servers (tests/fakeapple) bind the addresses of lab.plan on the namespace's loopback;
those that cannot take a fixed port bind port 0 and get a DNAT rule from the real port, added
here (the process runs as root inside the namespace). Every catalog name resolves, by role:
couriers through Apple's CNAME chain to the courier address, the provider API names to the
provider address, NTP names to the site's own clock, every other name to the web server.

It prints one JSON line when ready ({"ca": PEM, "inspection_ca": PEM}) and serves JSON
commands on the control socket (Unix, so it works across namespaces), one per connection:
    {"ntp_offset": {"site": N, "seconds": 5.0}}   {"pop": {"site": N, "pop": "us-east"}}
It stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from courierwatch.probe import catalog
from fakeapple import COURIER_ALPN, COURIER_SNI, FakeDNS, FakeNTP, HTTPServer, TestPKI, TLSServer
from lab import plan
from lab.plan import Service

FAMILIES = (4, 6)
COURIER_PORTS = (5223, 443)
PROVIDER_PORTS = (443, 2197)
INSPECTED_PORTS = (443, 5223, 2197)
CONTROL_LIMIT = 65536  # bytes of one command
TTL = 5  # seconds: short, so a POP move reaches the probes' resolver caches quickly


@dataclass(frozen=True, slots=True)
class Names:
    """The catalog's names by the server that answers them."""

    couriers: tuple[str, ...]  # the dialled N-courier.push.apple.com names
    courier_hosts: tuple[str, ...]  # logical courier names (courier.push.apple.com)
    provider: tuple[str, ...]
    ntp: tuple[str, ...]
    web: tuple[str, ...]


def catalog_names() -> Names:
    couriers: dict[str, None] = {}
    courier_hosts: dict[str, None] = {}
    provider: dict[str, None] = {}
    ntp: dict[str, None] = {}
    web: dict[str, None] = {}
    targets = catalog.targets()
    for target in targets:
        if target.check == "courier":
            courier_hosts[target.host] = None
            couriers.update(dict.fromkeys(f"{n}-{target.host}" for n in target.numbers))
        elif target.group == "push_provider":
            provider[target.host] = None
        elif target.check == "ntp":
            ntp[target.host] = None
    claimed = {*courier_hosts, *provider, *ntp}
    web.update(dict.fromkeys(t.host for t in targets if t.host not in claimed))
    return Names(*(tuple(d) for d in (couriers, courier_hosts, provider, ntp, web)))


def group_hosts(group_ids: Iterable[str]) -> set[str]:
    """The names the catalog lists in these groups."""
    return {target.host for target in catalog.targets(group_ids)} if group_ids else set()


def fill_zone(
    dns: FakeDNS, names: Names, mode: str, pop: str, n: int, unresolved: Iterable[str] = ()
) -> None:
    """Site n's answers: Apple's, or with the courier names sinkholed or hijacked; the names of
    the `unresolved` groups answer NXDOMAIN."""
    for family, add in ((4, dns.add_a), (6, dns.add_aaaa)):
        for name in names.provider:
            add(name, plan.service(Service.PROVIDER, family), ttl=TTL)
        for name in names.web:
            add(name, plan.service(Service.WEB, family), ttl=TTL)
        for name in names.ntp:
            add(name, plan.ntp(n, family), ttl=TTL)
    couriers = (*names.couriers, *names.courier_hosts)
    if mode == "sinkhole":
        for name in couriers:
            dns.add_a(name, "0.0.0.0", ttl=TTL)
            dns.add_aaaa(name, "::", ttl=TTL)
    elif mode == "hijack":
        for name in couriers:
            dns.add_a(name, plan.PRIVATE_ADDRESS, ttl=TTL)
    else:
        point_couriers(dns, names, pop)
    for name in group_hosts(unresolved):
        dns.nxdomain(name)


def point_couriers(dns: FakeDNS, names: Names, pop: str) -> None:
    """Apple's chain, N-courier.push.apple.com -> N.courier-push-apple.com.akadns.net ->
    {pop}-courier-4.push-apple.com.akadns.net -> the courier address; again: a POP move."""
    edge = f"{pop}-courier-4.push-apple.com.akadns.net"
    for name in names.couriers:
        number = int(name.split("-", 1)[0])
        dns.courier_chain(number, pop, plan.service(Service.COURIER, 4), ttl=TTL, edge=edge)
    dns.add_aaaa(edge, plan.service(Service.COURIER, 6), ttl=TTL)
    for name in names.courier_hosts:
        dns.remove(name)
        dns.add_a(name, plan.service(Service.COURIER, 4), ttl=TTL)
        dns.add_aaaa(name, plan.service(Service.COURIER, 6), ttl=TTL)


def dnat(address: str, proto: str, port: int, to_port: int) -> None:
    """Connections to address:port reach the server on address:to_port."""
    six = ":" in address
    target = f"[{address}]:{to_port}" if six else f"{address}:{to_port}"
    subprocess.run(
        ["ip6tables" if six else "iptables", "-w", "5", "-t", "nat", "-A", "PREROUTING",
         "-d", address, "-p", proto, "--dport", str(port), "-j", "DNAT",
         "--to-destination", target],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


class Apple:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.names = catalog_names()
        self.zones: dict[int, FakeDNS] = {}
        self.clocks: dict[int, list[FakeNTP]] = {}

    async def serve(self, stack: contextlib.AsyncExitStack) -> dict[str, str]:
        pki = stack.enter_context(TestPKI(self.spec["directory"]))
        courier_cert = pki.issue(COURIER_SNI)
        provider_cert = pki.issue(*self.names.provider)
        web_cert = pki.issue(*self.names.web)
        inspected = pki.issue_inspected(COURIER_SNI, *self.names.provider, *self.names.web)
        tls: list[tuple[Any, list[str] | None, Service, tuple[int, ...]]] = [
            (courier_cert, [COURIER_ALPN], Service.COURIER, COURIER_PORTS),
            (provider_cert, ["h2"], Service.PROVIDER, PROVIDER_PORTS),
            (provider_cert, ["http/1.1"], Service.PROVIDER_H1, PROVIDER_PORTS),
            (inspected, [COURIER_ALPN, "h2"], Service.INSPECTION, INSPECTED_PORTS),
        ]
        for family in FAMILIES:
            for cert, alpn, role, ports in tls:
                for port in ports:
                    host = plan.service(role, family)
                    await stack.enter_async_context(TLSServer(cert, alpn, host=host, port=port))
            web = plan.service(Service.WEB, family)
            for cert, port in ((web_cert, 443), (None, 80)):
                server = await stack.enter_async_context(HTTPServer(cert, host=web))
                dnat(web, "tcp", port, server.port)
        for site in self.spec["sites"]:
            await self._site(stack, site)
        return {"ca": str(pki.ca_pem_path), "inspection_ca": str(pki.inspection_ca_pem_path)}

    async def _site(self, stack: contextlib.AsyncExitStack, site: dict[str, Any]) -> None:
        n = site["n"]
        dns = await stack.enter_async_context(FakeDNS(plan.resolver(n)))
        fill_zone(dns, self.names, site["dns"], site["pop"], n, site["unresolved"])
        for proto in ("udp", "tcp"):
            dnat(plan.resolver(n), proto, 53, dns.port)
        self.zones[n] = dns
        self.clocks[n] = []
        for family in FAMILIES:
            clock = FakeNTP(offset=site["ntp_offset"])
            clock.host = plan.ntp(n, family)  # FakeNTP binds loopback unless told otherwise
            await stack.enter_async_context(clock)
            dnat(clock.host, "udp", 123, clock.port)
            self.clocks[n].append(clock)

    def command(self, request: dict[str, Any]) -> None:
        handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "ntp_offset": self._ntp_offset,
            "pop": self._pop,
        }
        for name, arguments in request.items():
            handlers[name](arguments)

    def _ntp_offset(self, arguments: dict[str, Any]) -> None:
        for clock in self.clocks[arguments["site"]]:
            clock.offset = float(arguments["seconds"])

    def _pop(self, arguments: dict[str, Any]) -> None:
        point_couriers(self.zones[arguments["site"]], self.names, arguments["pop"])

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.command(json.loads(await reader.readline()))
            reply: dict[str, Any] = {"ok": True}
        except (KeyError, TypeError, ValueError) as error:
            reply = {"ok": False, "error": repr(error)}
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
        writer.close()


async def main(spec: dict[str, Any]) -> None:
    apple = Apple(spec)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    async with contextlib.AsyncExitStack() as stack:
        facts = await apple.serve(stack)
        server = await asyncio.start_unix_server(
            apple.control, spec["control"], limit=CONTROL_LIMIT
        )
        async with server:
            print(json.dumps(facts), flush=True)
            await stopping.wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
