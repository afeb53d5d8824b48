"""The `courierwatch` command: one subcommand per role."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

from courierwatch.common import __version__
from courierwatch.common.configfile import ConfigError, split_host_port

if TYPE_CHECKING:
    from courierwatch.collector.server import Bound
    from courierwatch.discover import report as report_types
    from courierwatch.probe.config import ProbeConfig

log = logging.getLogger("courierwatch")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="courierwatch",
        description="Can the Apple devices at a site reach Apple? Probes check the APNs "
        "couriers and the services around them; a collector turns results into metrics.",
    )
    parser.add_argument("--version", action="version", version=f"courierwatch {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"],
        help="how much to log on stderr (default: info)",
    )
    roles = parser.add_subparsers(dest="role", required=True, metavar="ROLE")

    probe = roles.add_parser(
        "probe", help="the site daemon: check on a schedule, stream results to the collector",
        description="Run the checks of the configuration on their schedules and stream every "
        "result to the collector(s). Needs site, collectors and transport in the config.",
    )
    probe.add_argument("--config", metavar="FILE", required=True, help="probe YAML config")
    probe.add_argument("--insecure", action="store_true",
                       help="dev mode: plaintext, no certificate (logs a warning)")
    _add_check_config(probe)

    collector = roles.add_parser(
        "collector", help="the central server: receive probe streams, serve /metrics",
        description="Accept probe streams over gRPC (mTLS unless transport.insecure) and serve "
        "the results as Prometheus metrics on /metrics, plus /healthz.",
    )
    collector.add_argument("--config", metavar="FILE", required=True, help="collector YAML config")
    collector.add_argument("--insecure", action="store_true",
                           help="dev mode: accept probes in plaintext without certificates, "
                           "for any site (logs a warning)")
    _add_check_config(collector)

    up = roles.add_parser(
        "up", help="collector and a local probe in one process, on built-in defaults",
        description="Start a collector on loopback and a probe that checks the built-in "
        "Apple catalog (or the targets of --config), then print the /metrics URL. "
        "Probe and collector talk in plaintext over loopback: a tryout, not a deployment.",
    )
    up.add_argument("--config", metavar="FILE", help="probe YAML config (default: built-in)")
    up.add_argument("--http", default="127.0.0.1:9474", metavar="HOST:PORT",
                    help="where to serve /metrics (default: 127.0.0.1:9474)")
    up.add_argument("--grpc", default="127.0.0.1:9475", metavar="HOST:PORT",
                    help="where the collector listens for the probe (default: 127.0.0.1:9475)")
    _add_check_config(up)

    check = roles.add_parser(
        "check", help="run every check once and print a readiness report",
        description="Run every check once, all at the same time, and print a readiness report "
        "by Apple service with an action item for each failure. Exit status 0 when every "
        "critical service works, 1 when one fails, 2 for a configuration error.",
    )
    check.add_argument("--config", metavar="FILE", help="probe YAML config (default: built-in)")
    check.add_argument("--json", action="store_true",
                       help="print the report as JSON (schema courierwatch.check/1)")
    check.add_argument("--all", action="store_true", help="also list every check, one line each")
    _add_check_config(check)

    discover = roles.add_parser(
        "discover", help="what the site's devices ask Apple for, and what its DNS filter blocks",
        description="Read DNS queries from Pi-hole FTL databases, packet captures (pcap, "
        "pcapng) and dnsmasq/Pi-hole or unbound query logs, merged, and report every Apple "
        "name the clients asked for: blocked ones first, each with its fix, then names outside "
        "the catalog, then the rest, then the courier POPs. Exit status 0, 1 when an Apple "
        "name is blocked, 2 when a source cannot be read (the others are still reported).",
    )
    discover.add_argument("sources", nargs="+", metavar="SOURCE",
                          help="pihole-FTL.db, a .pcap/.pcapng capture, or a query log")
    discover.add_argument("--since", type=_moment, metavar="WHEN",
                          help="only queries from then on: 2026-12-01, 2026-12-01T08:00 (UTC "
                          "unless it says), or a time ago such as 2h or 7d")
    discover.add_argument("--until", type=_moment, metavar="WHEN", help="only queries before then")
    discover.add_argument("--json", action="store_true",
                          help="print the report as JSON (schema courierwatch.discover/1)")
    discover.add_argument("--hash-clients", action="store_true",
                          help="list clients as salted hashes (new salt each run), for reports "
                          "that leave the site; without it clients are only counted")
    discover.add_argument("--write-targets", metavar="FILE",
                          help="write the Apple names outside the catalog as probe targets")

    pki = roles.add_parser(
        "pki", help="the fleet CA: certificates for the collector and each probe",
        description="Create the fleet CA, the collector's certificate, and a probe's bundle "
        "(CA, certificate, key and probe.yaml in one .tar.gz) to enroll a new Raspberry Pi.",
    )
    steps = pki.add_subparsers(dest="step", required=True, metavar="STEP")
    init = steps.add_parser("init", help="create the fleet CA (ca.pem, ca.key)")
    init.add_argument("--name", default="courierwatch fleet CA", help="the CA's common name")
    init.add_argument("--days", type=int, default=3650, help="validity (default: 3650)")
    server = steps.add_parser("collector", help="issue the collector's server certificate")
    server.add_argument("--host", action="append", required=True, metavar="NAME_OR_IP",
                        help="a name or address probes dial (repeat for several)")
    server.add_argument("--days", type=int, default=825, help="validity (default: 825)")
    enroll = steps.add_parser("probe", help="issue a probe's certificate bundle")
    enroll.add_argument("--site", required=True, help="the site the probe may report for")
    enroll.add_argument("--probe-id", required=True, help="the probe's identity (CN)")
    enroll.add_argument("--collector", action="append", required=True, metavar="HOST:PORT",
                        help="collector address for the probe's config (repeat for failover)")
    enroll.add_argument("--out", help="bundle path (default: DIR/<probe-id>.tar.gz)")
    enroll.add_argument("--days", type=int, default=825, help="validity (default: 825)")
    for step in (init, server, enroll):
        step.add_argument("--dir", default="pki", help="where the CA lives (default: ./pki)")
        step.add_argument("--force", action="store_true", help="replace existing files")
    return parser


def _add_check_config(role: argparse.ArgumentParser) -> None:
    role.add_argument("--check-config", action="store_true",
                      help="validate the config file and exit (0: valid, 2: the error) without "
                      "starting anything; for CI and systemd's ExecReload=")


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    service = _Service()
    if args.role in ("probe", "collector", "up"):
        # Until the event loop takes SIGHUP over, it only asks for a reload (its default would
        # kill the process): one asked for while the config was first read is not lost.
        signal.signal(signal.SIGHUP, lambda *_: service.hangup.set())
    try:
        code = _dispatch(args, service)
    except (ConfigError, StartError) as error:
        print(f"courierwatch: {error}", file=sys.stderr)
        code = 2
    except OSError as error:  # after a daemon started: systemd may restart it
        print(f"courierwatch: {error}", file=sys.stderr)
        code = 1
    sys.exit(code)


def _dispatch(args: argparse.Namespace, service: _Service) -> int:
    # Imported per role so that, say, `check` on a Pi does not load the collector.
    if args.role == "pki":
        return _pki(args)
    if args.role == "discover":
        return _discover(args)
    if args.role == "collector":
        return _collector(args, service)
    from courierwatch.probe.config import load_probe_config

    def load() -> ProbeConfig:
        daemon = args.role == "probe"  # `check` and `up` need no identity
        return load_probe_config(
            args.config, require_identity=daemon, insecure=daemon and args.insecure
        )

    if args.check_config:
        config = load()
        print(f"{config.source}: ok, {len(config.targets)} checks")
        return 0
    if args.role == "check":
        from courierwatch.probe.oneshot.run import check_once

        return asyncio.run(check_once(args.config, as_json=args.json, show_all=args.all))
    from courierwatch.probe.daemon import Reloads, run_probe

    config = load()
    if args.role == "probe":
        from courierwatch.probe import eventloop

        try:  # uvloop where installed: less CPU per check (tests/bench/RESULTS-probe.md)
            _, loop_factory = eventloop.choose()
        except ValueError as error:
            raise StartError(f"cannot start: {error}") from None
        return _run_until_signal(service, run_probe(
            config, service.stop, reloads=Reloads(service.hangup, load), on_ready=service.ready
        ), loop_factory)  # fmt: skip
    from courierwatch.allinone import run_up, up_collector

    return _run_until_signal(service, run_up(
        up_collector(http=args.http, grpc=args.grpc), config, service.stop,
        reloads=Reloads(service.hangup, load), on_ready=service.ready,
    ))  # fmt: skip


def _collector(args: argparse.Namespace, service: _Service) -> int:
    from courierwatch.collector.config import load_collector_config

    config = load_collector_config(args.config, insecure=args.insecure)
    if args.check_config:
        print(f"{config.source}: ok")
        return 0
    from courierwatch.collector.server import serve

    def announce(bound: Bound) -> None:
        service.ready()
        # One line on stdout that scripts (and the end-to-end tests) can wait for.
        print(f"collector ready: grpc={bound.grpc} metrics={bound.metrics_url}", flush=True)

    return _run_until_signal(service, serve(config, service.stop, announce, hangup=service.hangup))


def _pki(args: argparse.Namespace) -> int:
    # Here only: cryptography costs every other role (a probe on a Pi) some 10 MB of memory.
    from courierwatch import pki

    try:
        return _pki_step(pki, args)
    except pki.PkiError as error:
        print(f"courierwatch: {error}", file=sys.stderr)
        return 2


def _pki_step(pki: ModuleType, args: argparse.Namespace) -> int:
    from pathlib import Path

    directory = Path(args.dir)
    if args.step == "init":
        made = pki.create_ca(directory, name=args.name, days=args.days, force=args.force)
        print(f"fleet CA: {made} (keep {directory / pki.CA_KEY} offline if you can)")
    elif args.step == "collector":
        made = pki.issue_collector(directory, args.host, days=args.days, force=args.force)
        print(f"collector certificate: {made} and {directory / pki.COLLECTOR_KEY}")
    else:
        bundle = pki.probe_bundle(directory, site=args.site, probe_id=args.probe_id,
                                  collectors=args.collector, days=args.days)  # fmt: skip
        out = Path(args.out or directory / f"{args.probe_id}.tar.gz")
        pki.write_bundle(out, bundle, force=args.force)
        print(f"probe bundle: {out} (copy it to the Pi; it holds the probe's private key)")
    return 0


def _moment(text: str) -> float:
    """A --since/--until value: an ISO 8601 date or time (UTC unless it names a zone), or a
    duration before now."""
    from datetime import UTC, datetime

    from courierwatch.common.configfile import to_duration

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            return time.time() - to_duration(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither a date or time (2026-12-01T08:00) nor a duration ago (2h)"
            ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _discover(args: argparse.Namespace) -> int:
    from courierwatch.discover import report, targets
    from courierwatch.discover.run import discover

    found = discover(
        args.sources, since=args.since, until=args.until, hash_clients=args.hash_clients
    )
    render = report.discovery_json if args.json else report.discovery_text
    print(render(found, dns_filter_advice()))
    code = 1 if found.section("blocked") else 0
    for source in found.sources:
        if source.error:
            print(f"courierwatch: {source.error}", file=sys.stderr)
            code = 2
    if args.write_targets:
        try:
            written = targets.write(args.write_targets, found)
        except OSError as error:
            print(f"courierwatch: {args.write_targets}: cannot write: {error.strerror or error}",
                  file=sys.stderr)  # fmt: skip
            return 2
        print(f"courierwatch: {written} names as targets in {args.write_targets}", file=sys.stderr)
    return code


def dns_filter_advice() -> report_types.Advisor:
    """The readiness report's own words for a name a DNS filter blocks (its dns_sinkhole
    action and to-do merge), for `discover`: the same finding reads the same in both."""
    from courierwatch.probe.oneshot import readiness
    from courierwatch.v1 import courierwatch_pb2 as pb

    def action(name: str, group: str) -> readiness.Action:
        result = pb.Result(target=name, group=group, check="dns", port=53,
                           outcome=pb.OUTCOME_DNS_SINKHOLE)  # fmt: skip
        return readiness.action(result)

    class Advice:
        def fix(self, name: str, group: str) -> str:
            return action(name, group).text

        def todo(self, findings: Sequence[tuple[str, str]]) -> list[str]:
            return readiness.merge(action(name, group) for name, group in findings)

    return Advice()


@dataclass(slots=True)
class _Service:
    """What a daemon gets from the command line: its signals, and a way to say it is up."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)  # SIGINT, SIGTERM
    hangup: asyncio.Event = field(default_factory=asyncio.Event)  # SIGHUP: reload the config
    started: bool = False

    def ready(self) -> None:
        self.started = True


class StartError(Exception):
    """A daemon could not start here (a port in use, a spool it cannot create): one line, and
    exit status 2, as for a configuration error: retrying unchanged cannot help."""


def _run_until_signal(
    service: _Service,
    job: Coroutine[None, None, None],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> int:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, service.stop.set)
        loop.add_signal_handler(signal.SIGHUP, service.hangup.set)
        await job

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())
    except Exception as error:
        # A task group wraps what failed in it; an operator needs the one error, not the wrap.
        leaf: BaseException = error
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, ConfigError):
            raise leaf from None
        if not service.started and (reason := _start_failure(leaf)):
            raise StartError(f"cannot start: {reason}") from None
        if isinstance(leaf, OSError):
            raise leaf from None
        raise
    return 0


# gRPC's words for an address it could not listen on (it says no more).
_GRPC_BIND = re.compile(r"Failed to bind to address (\S+?);")


def _start_failure(error: BaseException) -> str | None:
    """One line for what stopped a daemon from starting, if it was its environment."""
    if isinstance(error, OSError):
        if error.filename:
            return f"{error.filename}: {error.strerror}"
        return error.strerror or str(error)
    if isinstance(error, RuntimeError) and (bind := _GRPC_BIND.match(str(error))):
        return f"gRPC cannot listen on {bind[1]}: {_bind_problem(bind[1])}"
    return None


def _bind_problem(address: str) -> str:
    """Why `address` cannot be listened on, found by trying it once more."""
    host, port = split_host_port(address, allow_zero=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()
    except OSError as error:
        return os.strerror(error.errno) if error.errno else str(error)
    except ValueError as error:
        return str(error)
    return "the address is in use or not available"
