"""The lab: a router, an apple namespace and one namespace per site, a collector in the root
namespace, and a real `courierwatch probe` in each site streaming to it over mTLS.

    async with Lab({"a": Site(), "b": Site(block_5223=True)}, tmp_path) as lab:
        samples = await lab.collector_metrics()

Everything is created on enter and removed on exit, also when the block fails or the test is
interrupted: processes first, then the namespaces (which takes their interfaces and rules
with them) and their /etc/netns directories. Namespaces of dead runs are removed on enter.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import itertools
import json
import os
import socket
import subprocess
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml

from courierwatch import pki
from lab import faults, netns, nfqueue, plan, proxy
from lab.children import Child, environment, python
from lab.netns import Namespace
from lab.site import Site
from processes import Samples, scrape

PREFIX = "cwlab"  # namespace names: cwlab<pid>x<seq>-<role>
LOCK = Path("/run/lock/courierwatch-lab.lock")  # held while a lab picks its collector link
MAX_LABS = 64  # collector links (/30s in plan.NOC_BLOCK)
INTERVAL, TIMEOUT = 2.0, 1.5  # seconds: every check of the lab's probes
RUN_SECONDS = 30.0  # for a command run in a site
MAX_SECONDS = 3600.0  # an NFQUEUE holder gives up by itself after this long
_sequence = itertools.count(1)


@dataclass(slots=True)
class SiteHandle:
    """A running site: its spec, number, namespace and the files the lab made for it."""

    key: str
    n: int
    spec: Site
    ns: Namespace
    directory: Path
    config: Path  # the probe's config
    probe: Child | None = None

    @property
    def address(self) -> str:
        return plan.site_side(self.n, 4)

    @property
    def resolver(self) -> str:
        return plan.resolver(self.n)

    @property
    def proxy_url(self) -> str | None:
        if self.spec.proxy is None:
            return None
        return f"http://{plan.router_side(self.n, 4)}:{plan.PROXY_PORT}"


class Lab:
    """See the module docstring and tests/lab/README.md. `probes=False` leaves the probe
    daemons out (a test can then run `courierwatch check` with `run_in`); `collector` adds
    sections to the collector's config (e.g. {"series": {"min_stale": "5s"}})."""

    def __init__(
        self,
        sites: Mapping[str, Site],
        directory: Path,
        *,
        probes: bool = True,
        interval: float = INTERVAL,
        timeout: float = TIMEOUT,
        collector: Mapping[str, Any] | None = None,
    ) -> None:
        if not 1 <= len(sites) <= plan.MAX_SITES:
            raise ValueError(f"a lab has 1 to {plan.MAX_SITES} sites, got {len(sites)}")
        self.specs = dict(sites)
        self.directory = directory
        self.with_probes = probes
        self.interval, self.timeout = interval, timeout
        self.collector_settings = dict(collector or {})
        self.id = f"{PREFIX}{os.getpid()}x{next(_sequence)}"
        self.router = Namespace(f"{self.id}-router")
        self.apple = Namespace(f"{self.id}-apple")
        self.sites: dict[str, SiteHandle] = {}
        self.ca = ""  # the fake Apple CA's PEM, the probes' trust anchor
        self.inspection_ca = ""  # the inspection box's root, for trust.site if a test wants it
        self.noc = ""  # the root namespace's address on the collector's link
        self.collector_grpc = self.collector_http = ""
        self._fleet = directory / "pki"  # the fleet CA: the collector's and probes' certificates
        self._stack = contextlib.AsyncExitStack()

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if os.geteuid() != 0:
            raise PermissionError("the lab needs root: network namespaces and iptables")
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        netns.remove_stale(PREFIX)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._stack.callback(self._delete_namespaces)
        self._build_topology()
        await self._start_apple()
        await self._start_collector()
        for site in self.sites.values():
            await self._start_site(site)

    def _namespaces(self) -> list[Namespace]:
        return [self.router, self.apple, *(site.ns for site in self.sites.values())]

    def _delete_namespaces(self) -> None:
        for ns in self._namespaces():
            ns.delete()

    # --- network --------------------------------------------------------------------------

    def _build_topology(self) -> None:
        for n, (key, spec) in enumerate(self.specs.items(), start=1):
            directory = self.directory / f"site-{key}"
            directory.mkdir(exist_ok=True)
            ns = Namespace(f"{self.id}-site-{key}")
            self.sites[key] = SiteHandle(key, n, spec, ns, directory, directory / "probe.yaml")
        for ns in (self.router, self.apple):
            ns.create()
        self.router.sysctl(net__ipv4__ip_forward="1", net__ipv6__conf__all__forwarding="1")
        netns.link(self.router, "apple", self.apple, "eth0")
        _address(self.router, "apple", f"{plan.ROUTER_APPLE4}/30", f"{plan.ROUTER_APPLE6}/64")
        _address(self.apple, "eth0", f"{plan.APPLE4}/30", f"{plan.APPLE6}/64")
        for cidr in plan.apple_addresses(len(self.sites)):
            self.apple.ip("addr", "add", cidr, "dev", "lo", *(["nodad"] if ":" in cidr else []))
        self.apple.ip("route", "add", "default", "via", plan.ROUTER_APPLE4)
        self.apple.ip("-6", "route", "add", "default", "via", plan.ROUTER_APPLE6)
        self.router.ip("route", "add", plan.APPLE_NET4, "via", plan.APPLE4)
        self.router.ip("-6", "route", "add", plan.APPLE_NET6, "via", plan.APPLE6)
        self._link_collector()
        for site in self.sites.values():
            self._build_site(site)

    def _link_collector(self) -> None:
        """A veth from the root namespace (where the collector runs) to the router, which
        masquerades the sites behind its end, so the root namespace needs no route."""
        root_end = f"cwl{self.id.removeprefix(PREFIX)}"[:15]
        with _locked():
            k = _free_noc_link()
            root, router = plan.noc_link(k)
            netns.link(None, root_end, self.router, "noc")
            netns.ip("addr", "add", f"{root}/30", "dev", root_end)
        self.router.ip("addr", "add", f"{router}/30", "dev", "noc")
        self.router.iptables("-t", "nat", "-A", "POSTROUTING", "-o", "noc", "-j", "MASQUERADE")
        self.noc = root

    def _build_site(self, site: SiteHandle) -> None:
        site.ns.create()
        n, ns, spec = site.n, site.ns, site.spec
        netns.link(self.router, f"s{n}", ns, "eth0")
        six = spec.ipv6 != "off"
        _address(self.router, f"s{n}", f"{plan.router_side(n, 4)}/24",
                 f"{plan.router_side(n, 6)}/64")  # fmt: skip
        _address(ns, "eth0", f"{plan.site_side(n, 4)}/24",
                 f"{plan.site_side(n, 6)}/64" if six else None)  # fmt: skip
        ns.ip("route", "add", "default", "via", plan.router_side(n, 4))
        if six:
            ns.ip("-6", "route", "add", "default", "via", plan.router_side(n, 6))
        else:
            ns.sysctl(net__ipv6__conf__all__disable_ipv6="1")
        if spec.dns == "unreachable":
            ns.ip("route", "add", "unreachable", f"{site.resolver}/32")
        ns.etc.mkdir(parents=True, exist_ok=True)
        (ns.etc / "resolv.conf").write_text(f"nameserver {site.resolver}\n")
        faults.install(self.router, n, f"s{n}")
        faults.apply(self.router, n, spec)

    # --- processes --------------------------------------------------------------------------

    async def _start_apple(self) -> None:
        spec_path = self.directory / "apple.json"
        spec_path.write_text(json.dumps({
            "directory": str(self.directory / "apple-pki"),
            "control": str(self.directory / "apple.sock"),
            "sites": [{"n": s.n, "dns": s.spec.dns, "pop": s.spec.pop,
                       "ntp_offset": s.spec.ntp_offset, "unresolved": list(s.spec.unresolved)}
                      for s in self.sites.values()],
        }))  # fmt: skip
        argv = self.apple.command(*python("lab.apple", str(spec_path)))
        child, line = await Child.start(argv, self.directory / "apple.log", ready=r"^\{")
        self._stack.push_async_callback(child.stop)
        facts = json.loads(line)
        self.ca, self.inspection_ca = facts["ca"], facts["inspection_ca"]

    async def _start_collector(self) -> None:
        fleet = self._fleet
        pki.create_ca(fleet, name="courierwatch lab CA", days=2)
        pki.issue_collector(fleet, [self.noc], days=2)
        self.collector_grpc = f"{self.noc}:{_free_port(self.noc)}"
        self.collector_http = f"{self.noc}:{_free_port(self.noc)}"
        config = self.directory / "collector.yaml"
        config.write_text(yaml.safe_dump({
            "listen": {"grpc": self.collector_grpc, "http": self.collector_http},
            "transport": {"ca": str(fleet / "ca.pem"), "cert": str(fleet / "collector.pem"),
                          "key": str(fleet / "collector.key")},
            "state_dir": str(self.directory / "collector-state"),
            **self.collector_settings,
        }))  # fmt: skip
        argv = python("courierwatch", "collector", "--config", str(config))
        child, _ = await Child.start(argv, self.directory / "collector.log",
                                     ready=r"^collector ready:")  # fmt: skip
        self._stack.push_async_callback(child.stop)

    async def _start_site(self, site: SiteHandle) -> None:
        spec = site.spec
        if spec.proxy is not None:
            child = await proxy.start(
                self.router, spec.proxy, plan.router_side(site.n, 4), plan.PROXY_PORT,
                site.resolver, site.directory / "proxy",
            )  # fmt: skip
            self._stack.push_async_callback(child.stop)
        if spec.delay or spec.jitter:
            await self._stack.enter_async_context(
                nfqueue.delaying(
                    site.ns, ["-d", plan.APPLE_NET4], spec.delay, MAX_SECONDS, spec.jitter
                )
            )
        self._write_probe_config(site)
        if self.with_probes:
            argv = site.ns.command(*python("courierwatch", "probe", "--config", str(site.config)))
            site.probe, _ = await Child.start(argv, site.directory / "probe.log")
            self._stack.push_async_callback(site.probe.stop)

    def _write_probe_config(self, site: SiteHandle) -> None:
        """The bundle `courierwatch pki probe` makes, unpacked, with the lab's settings."""
        probe_id = f"probe-{site.key}"
        bundle = pki.probe_bundle(self._fleet, site=site.key, probe_id=probe_id,
                                  collectors=[self.collector_grpc], days=2)  # fmt: skip
        with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
            tar.extractall(site.directory, filter="data")
        config = yaml.safe_load(site.config.read_text())
        every = {"interval": f"{self.interval:g}s", "timeout": f"{self.timeout:g}s"}
        config.update({
            "resolver": {"nameservers": [site.resolver]},
            "trust": {"anchors": [self.ca], "system": False},
            "apple": {"ranges": list(plan.LAB_RANGES)},
            "families": ["ipv4"] if site.spec.ipv6 == "off" else ["ipv4", "ipv6"],
            "catalog": {"groups": list(site.spec.groups),
                        "settings": {g: every for g in site.spec.groups}},
            "spool": {"path": str(site.directory / "spool.sqlite")},
        })  # fmt: skip
        if site.proxy_url:
            config["proxy"] = {"url": site.proxy_url}
        site.config.write_text(yaml.safe_dump(config, sort_keys=False))

    # --- for tests --------------------------------------------------------------------------

    @property
    def metrics_url(self) -> str:
        return f"http://{self.collector_http}/metrics"

    def probe_config(self, key: str) -> Path:
        return self.sites[key].config

    async def collector_metrics(self) -> Samples:
        return await scrape(self.metrics_url)

    async def metrics_until(
        self,
        condition: Callable[[Samples], bool],
        what: str,
        seconds: float = 20.0,
        show: Callable[[Samples], object] | None = None,
    ) -> Samples:
        """Scrape until `condition` holds (bounded); AssertionError naming `what` (and what
        `show` makes of the last scrape) if not."""
        samples: Samples = {}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    with contextlib.suppress(OSError, AssertionError):
                        samples = await self.collector_metrics()
                        if condition(samples):
                            return samples
                    await asyncio.sleep(0.25)
        seen = f"; last seen: {show(samples)}" if show else ""
        raise AssertionError(
            f"after {seconds:g} s, still not {what}{seen}; logs in {self.directory}"
        )

    async def run_in(
        self, key: str, argv: Sequence[str], seconds: float = RUN_SECONDS
    ) -> subprocess.CompletedProcess[str]:
        """argv inside site `key`'s namespace (its resolv.conf bound over /etc/resolv.conf)."""
        process = await asyncio.create_subprocess_exec(
            *self.sites[key].ns.command(*argv),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment(),
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), seconds)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        assert process.returncode is not None
        return subprocess.CompletedProcess(list(argv), process.returncode, out.decode(),
                                           err.decode())  # fmt: skip

    async def change(self, key: str, spec: Site) -> None:
        """Replace site `key`'s path faults (block_*, loss, ipv6 broken, intercept, strip_h2)
        while the lab runs; its resolver, proxy, delay and families stay as created."""
        site = self.sites[key]
        await asyncio.to_thread(faults.apply, self.router, site.n, spec)
        site.spec = spec

    async def stop_probe(self, key: str) -> None:
        """Stop site `key`'s probe daemon (a dead Pi): its stream to the collector ends."""
        probe = self.sites[key].probe
        if probe is None:
            raise ValueError(f"site {key} has no probe running")
        await probe.stop()

    async def set_ntp_offset(self, key: str, seconds: float) -> None:
        await self._control({"ntp_offset": {"site": self.sites[key].n, "seconds": seconds}})

    async def move_pop(self, key: str, pop: str) -> None:
        await self._control({"pop": {"site": self.sites[key].n, "pop": pop}})

    async def _control(self, request: dict[str, Any]) -> None:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_unix_connection(self.directory / "apple.sock")
            try:
                writer.write(json.dumps(request).encode() + b"\n")
                await writer.drain()
                reply = json.loads(await reader.readline())
            finally:
                writer.close()
                await writer.wait_closed()
        if not reply.get("ok"):
            raise RuntimeError(f"the apple process refused {request}: {reply.get('error')}")


# --- helpers ---------------------------------------------------------------------------------


def _address(ns: Namespace, device: str, v4: str, v6: str | None) -> None:
    ns.ip("addr", "add", v4, "dev", device)
    if v6:
        ns.ip("addr", "add", v6, "dev", device, "nodad")  # usable at once: no DAD wait


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _free_noc_link() -> int:
    """The first collector link no interface of the root namespace holds."""
    used = netns.ip("-4", "-o", "addr", "show")
    for k in range(MAX_LABS):
        if f" {plan.noc_link(k)[0]}/" not in used:
            return k
    raise RuntimeError(f"{MAX_LABS} labs are running: stop one (ip netns list | grep {PREFIX})")


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port
