"""The NOC beside a lab: Debian's Prometheus scraping the lab's collector every second with the
shipped rule files, sending its alerts to Debian's Alertmanager running the shipped config.

    async with noc(lab.collector_http, tmp_path) as (prom, am):
        firing = await prom.alerts()          # pending and firing, with labels and state
        held = await am.alerts()              # each with status.state active/suppressed

The shipped `for:` durations are minutes: a test cannot wait for them. `scaled_rules` copies
the rule files with every `for:` scaled (by default a minute becomes a second: 2m -> 2s,
10m -> 10s), so their order, and with it the promise that an inhibiting alert fires no later
than those it inhibits, is kept; every group is evaluated at Prometheus' global interval (1 s).
Alertmanager's receivers point at a closed port on loopback: tests read its /api/v2/alerts (a
notification waits for group_wait, 30 s, which a test does not).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import yaml
from promserver import JOB, RULES, Alertmanager, Prometheus, _daemon, alertmanager, require

ROOT = Path(__file__).resolve().parents[2]
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
SCALE = 1 / 60  # of every `for:`: minutes become seconds
CLOSED = "http://127.0.0.1:9/"  # the discard port: nothing listens there
_FOR = re.compile(r"(?m)^(\s+for:\s*)(\S+)\s*$")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def seconds(duration: str) -> float:
    """A Prometheus duration (`90s`, `10m`, `1h30m`) in seconds."""
    parts = _PART.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(n) * _UNIT[u] for n, u in parts)


def scaled_rules(
    directory: Path, scale: float = SCALE, rules: Sequence[Path] = RULES
) -> list[Path]:
    """Copies of `rules` in `directory`: every `for:` times `scale` (at least 1 s, whole
    seconds), every group's own `interval:` removed."""
    directory.mkdir(parents=True, exist_ok=True)

    def scaled(match: re.Match[str]) -> str:
        return f"{match.group(1)}{_scaled(seconds(match.group(2)), scale)}s"

    copies = []
    for source in rules:
        text = _FOR.sub(scaled, source.read_text())
        copy = directory / source.name
        copy.write_text(re.sub(r"(?m)^\s+interval:\s*\S+\n", "", text))
        copies.append(copy)
    return copies


def longest_for(scale: float = SCALE, rules: Sequence[Path] = RULES) -> float:
    """Seconds of the longest scaled `for:`: after a condition has held that long (and a few
    evaluations more), every alert it implies has fired."""
    durations = [seconds(m.group(2)) for f in rules for m in _FOR.finditer(f.read_text())]
    return max(_scaled(d, scale) for d in durations)


def _scaled(duration: float, scale: float) -> int:
    return max(1, round(duration * scale))


def alertmanager_config(directory: Path, source: Path = ALERTMANAGER) -> Path:
    """The shipped Alertmanager config with every webhook pointed at CLOSED; routes and
    inhibitions untouched."""
    config = yaml.safe_load(source.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = CLOSED
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.asynccontextmanager
async def noc(
    collector: str, directory: Path, scale: float = SCALE
) -> AsyncIterator[tuple[Prometheus, Alertmanager]]:
    """Alertmanager, then Prometheus scraping `collector` (host:port of /metrics) as job
    "courierwatch" every second, evaluating the scaled rules every second, alerting to it."""
    binary = require("prometheus")
    rules = scaled_rules(directory / "rules", scale)
    async with alertmanager(alertmanager_config(directory), directory) as am:

        def argv(port: int) -> list[str]:
            config = {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                           "evaluation_interval": "1s"},
                "rule_files": [str(f) for f in rules],
                "alerting": {"alertmanagers": [
                    {"static_configs": [{"targets": [am.url.removeprefix("http://")]}]}
                ]},
                "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [collector]}]}],
            }  # fmt: skip
            (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
            return [
                binary,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ]

        async with (
            _daemon("prometheus", argv, directory) as url,
            aiohttp.ClientSession() as session,
        ):
            yield Prometheus(url, session), am
