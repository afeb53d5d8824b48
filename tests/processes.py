"""Running courierwatch as real processes in tests, and reading what they serve."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Mapping, Sequence

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from promserver import stop

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@contextlib.asynccontextmanager
async def courierwatch(
    *args: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`courierwatch ARGS` as a child process; stopped with SIGTERM (then killed) on exit.
    `env`: the child's environment (default: this process's)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "courierwatch",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        yield process
    finally:
        await stop(process)


async def line_starting(process: asyncio.subprocess.Process, prefix: str, seconds: float) -> str:
    """The first stdout line that starts with `prefix`; fails with stderr if the process ends."""
    assert process.stdout is not None
    async with asyncio.timeout(seconds):
        while line := (await process.stdout.readline()).decode():
            if line.startswith(prefix):
                return line.strip()
    assert process.stderr is not None
    raise AssertionError(f"process ended without {prefix!r}: {(await process.stderr.read())!r}")


def parse(text: str) -> Samples:
    return {
        # An empty label value is no label at all to Prometheus.
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if v))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted(labels.items())))


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return parse(await response.text())


async def wait_for_metrics(
    url: str, wanted: Sequence[tuple[str, tuple[tuple[str, str], ...]]], seconds: float
) -> Samples:
    """Scrape until every wanted series is present (the probe works in another process)."""
    samples: Samples = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                samples = await scrape(url)
                if all(w in samples for w in wanted):
                    return samples
                await asyncio.sleep(0.2)
    missing = [w for w in wanted if w not in samples]
    names = {w[0] for w in missing}
    seen = [s for s in samples if s[0] in names][:5]
    raise AssertionError(f"series missing after {seconds} s: {missing}; of those names: {seen}")
