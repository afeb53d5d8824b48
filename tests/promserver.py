"""Real Prometheus and Alertmanager processes (Debian's) for tests, and what to ask them.

Each daemon listens on 127.0.0.1 on a free port, keeps its data and log in a temporary folder,
and is stopped with SIGTERM (then killed) on exit. Usage:

    async with prometheus(["127.0.0.1:9474"], tmp_path) as prom:
        await prom.query("courierwatch_probe_up")
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import os
import re
import shutil
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from polling import until

ROOT = Path(__file__).resolve().parent.parent
RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
JOB = "courierwatch"  # the scrape job the shipped alerts expect (CollectorDown)
START_SECONDS = 20.0


def require(command: str) -> str:
    """Path of a Debian tool the test needs: skipped where absent, but a failure in CI
    (tests/run installs them as root there)."""
    path = shutil.which(command)
    if path is None:
        message = f"{command} is not installed (tests/run installs it when run as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Daemon:
    url: str
    session: aiohttp.ClientSession

    async def get(self, path: str, **params: str) -> Any:
        async with self.session.get(self.url + path, params=params) as response:
            return await response.json()

    async def wait_for(self, check: Callable[[], Awaitable[Any]], seconds: float, what: str) -> Any:
        """Polls `check()` (a question to this daemon) until it returns something truthy."""
        return await until(what, seconds, check, every=0.25)


class Prometheus(Daemon):
    @property
    def write_url(self) -> str:
        """Its remote-write receiver (started with `receive=True`)."""
        return self.url + "/api/v1/write"

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar) `expr` evaluates to now; a PromQL error raises."""
        answer = await self.get("/api/v1/query", query=expr)
        if answer.get("status") != "success":
            raise AssertionError(f"{expr!r}: {answer.get('error', answer)}")
        result = answer["data"]["result"]
        return result if answer["data"]["resultType"] == "vector" else [{"value": result}]

    async def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts: each has labels, annotations and state."""
        return (await self.get("/api/v1/alerts"))["data"]["alerts"]


    async def assert_dashboards_have_data(self, seconds: float, **values: str) -> None:
        """Every shipped dashboard query, with Grafana's variables set to `values`, returns
        data within `seconds` (rules and scrapes need a few rounds)."""
        queries = [q for _, q in dashboard_queries(**values)]

        async def without_data() -> list[str]:
            return [q for q in queries if not await self.query(q)]

        async def all_answer() -> bool:
            return not await without_data()

        try:
            await self.wait_for(all_answer, seconds, "every dashboard query has data")
        except AssertionError:
            pytest.fail(f"dashboard queries without data: {await without_data()}")


class Alertmanager(Daemon):
    async def post(self, alerts: list[dict[str, Any]]) -> None:
        async with self.session.post(self.url + "/api/v2/alerts", json=alerts) as response:
            assert response.status == 200, await response.text()

    async def alerts(self) -> list[dict[str, Any]]:
        return await self.get("/api/v2/alerts")


@contextlib.asynccontextmanager
async def prometheus(
    targets: Sequence[str],
    tmp: Path,
    *,
    rule_files: Sequence[Path] = RULES,
    receive: bool = False,
) -> AsyncIterator[Prometheus]:
    """Prometheus scraping `targets` as job "courierwatch" and itself, every second, with
    `rule_files` (the shipped ones by default) evaluated every second. `receive`: it takes
    remote writes too (at write_url), late samples within an hour."""
    binary = require("prometheus")
    job: dict[str, Any] = {"job_name": JOB, "static_configs": [{"targets": list(targets)}]}

    def argv(port: int) -> list[str]:
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(f) for f in rule_files],
            "scrape_configs": [
                job,
                {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
            ],
        }
        if receive:
            config["storage"] = {"tsdb": {"out_of_order_time_window": "1h"}}
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        return [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            *(["--web.enable-remote-write-receiver"] if receive else []),
        ]

    async with _daemon("prometheus", argv, tmp) as url, aiohttp.ClientSession() as session:
        yield Prometheus(url, session)


@contextlib.asynccontextmanager
async def alertmanager(config: Path, tmp: Path) -> AsyncIterator[Alertmanager]:
    """Alertmanager with `config`, clustering off (it would gossip on every interface)."""
    binary = require("prometheus-alertmanager")

    def argv(port: int) -> list[str]:
        return [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ]

    async with _daemon("alertmanager", argv, tmp) as url, aiohttp.ClientSession() as session:
        yield Alertmanager(url, session)


@contextlib.asynccontextmanager
async def _daemon(name: str, argv: Callable[[int], list[str]], tmp: Path) -> AsyncIterator[str]:
    """Starts the daemon on a free port, yields its base URL once /-/ready answers 200.

    The port is free when chosen but could be taken before the daemon binds it: then it
    exits at once and is started again on another port (three tries)."""
    log = tmp / f"{name}.log"
    for _ in range(3):
        port = free_port()
        with log.open("ab") as sink:
            process = await asyncio.create_subprocess_exec(
                *argv(port), stdout=sink, stderr=sink, stdin=asyncio.subprocess.DEVNULL
            )
        try:
            url = f"http://127.0.0.1:{port}"
            if await _ready(url + "/-/ready", process):
                yield url
                return
            if b"address already in use" not in log.read_bytes():
                break
        finally:
            await stop(process)
    raise AssertionError(f"{name} did not start; its log:\n{log.read_text()[-3000:]}")


async def _ready(url: str, process: asyncio.subprocess.Process) -> bool:
    """True once `url` answers 200; False if the process ended first or took too long."""
    with contextlib.suppress(TimeoutError):
        async with aiohttp.ClientSession() as session, asyncio.timeout(START_SECONDS):
            while process.returncode is None:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return True
                # The daemon has no readiness signal but this URL; meanwhile, notice its exit.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 0.1)
    return False


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it is still there after 10 s."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


def fast_rules(tmp: Path, duration: str = "1s") -> list[Path]:
    """Copies of the shipped rule files for a test that cannot wait minutes: every alert's
    `for:` set to `duration`, and every group evaluated at Prometheus' global interval."""
    copies = []
    for source in RULES:
        text = re.sub(r"(?m)^(\s+for:\s*)\S+$", rf"\g<1>{duration}", source.read_text())
        copy = tmp / source.name
        copy.write_text(re.sub(r"(?m)^\s+interval:\s*\S+\n", "", text))
        copies.append(copy)
    return copies


# --- The dashboards' queries, made evaluable outside Grafana ---------------------------------

GRAFANA_BUILD = ROOT / "grafana" / "build.py"
# Values for Grafana's variables; interval ones get a window a test's Prometheus has filled.
VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*\w+\)$", re.S)


@functools.cache
def grafana_build() -> Any:
    """grafana/build.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA_BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_CHECK_VIEW = re.compile(r"check:(courierwatch_\w+):latest(\{[^}]*\})")


def store_only(expr: str) -> str:
    """A dashboard query as a store without the shipped rules answers it (a check family's
    check:X:latest view spelled out as what the rule computes, for outcome and issuer less
    exactly: every value of the hour): for tests of what the store itself holds."""
    return _CHECK_VIEW.sub(r"last_over_time(\1\2[65m])", expr)


def dashboard_queries(**values: str) -> Iterator[tuple[str, str]]:
    """(dashboard uid, PromQL) for every query of every shipped dashboard, with Grafana's
    variables replaced by `values` (e.g. site="ams") and the interval ones, and a variable's
    label_values(SELECTOR, label) reduced to its SELECTOR."""
    names = {**VARIABLES, **values}

    def substitute(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            raise KeyError(f"no test value for Grafana variable ${match.group(1)}")
        return names[match.group(1)]

    build = grafana_build()
    for file, dashboard in build.dashboards().items():
        for expr in build.expressions(dashboard):
            expr = _LABEL_VALUES.sub(r"\1", expr.strip())
            yield file.removesuffix(".json"), _VARIABLE.sub(substitute, expr)
