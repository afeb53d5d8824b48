"""The `courierwatch` command: one subcommand per role."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from courierwatch import __version__
from courierwatch.configfile import ConfigError

if TYPE_CHECKING:
    from courierwatch.collector.server import Bound

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

    collector = roles.add_parser(
        "collector", help="the central server: receive probe streams, serve /metrics",
        description="Accept probe streams over gRPC (mTLS unless transport.insecure) and serve "
        "the results as Prometheus metrics on /metrics, plus /healthz.",
    )
    collector.add_argument("--config", metavar="FILE", required=True, help="collector YAML config")

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

    check = roles.add_parser(
        "check", help="run every check once and print the results",
        description="Run each check of the configuration once, concurrently, and print the "
        "results. Exit status 0 when every check works, 1 when any fails.",
    )
    check.add_argument("--config", metavar="FILE", help="probe YAML config (default: built-in)")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        code = _dispatch(args)
    except ConfigError as error:
        print(f"courierwatch: {error}", file=sys.stderr)
        code = 2
    sys.exit(code)


def _dispatch(args: argparse.Namespace) -> int:
    # Imported per role so that, say, `check` on a Pi does not load the collector.
    if args.role == "check":
        from courierwatch.probe.oneshot import check_once

        return asyncio.run(check_once(args.config, as_json=args.json))
    if args.role == "probe":
        from courierwatch.probe.config import load_probe_config
        from courierwatch.probe.daemon import run_probe

        probe_config = load_probe_config(args.config)
        return _run_until_signal(lambda stop: run_probe(probe_config, stop))
    if args.role == "collector":
        from courierwatch.collector.config import load_collector_config
        from courierwatch.collector.server import serve

        collector_config = load_collector_config(args.config)
        return _run_until_signal(lambda stop: serve(collector_config, stop, _announce))
    from courierwatch.allinone import run_up, up_config

    configs = up_config(args.config, http=args.http, grpc=args.grpc)
    return _run_until_signal(lambda stop: run_up(*configs, stop))


def _announce(bound: Bound) -> None:
    # One line on stdout that scripts (and the end-to-end tests) can wait for.
    print(f"collector ready: grpc={bound.grpc} metrics={bound.metrics_url}", flush=True)


def _run_until_signal(job: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await job(stop)

    asyncio.run(main())
    return 0
