"""/metrics as served over HTTP: the series a NOC relies on, and promtool's approval."""

import asyncio
import os
import shutil
import subprocess

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from courierwatch.collector.exposition import Exposition
from courierwatch.collector.state import State
from courierwatch.collector.web import build_app
from courierwatch.v1 import courierwatch_pb2 as pb


def sample_state(now: float) -> State:
    state = State(clock=lambda: now)
    probe = state.connect(
        pb.Hello(site="ams", probe_id="pi-1", software_version="1.2", config_digest="d1")
    )
    ok = pb.Result(
        seq=1,
        target="1-courier.push.apple.com",
        port=5223,
        check="tls",
        group="push",
        outcome=pb.OUTCOME_OK,
        interval_seconds=30,
    )
    ok.started_at.FromSeconds(int(now) - 5)
    ok.phases.dns, ok.phases.connect, ok.phases.tls, ok.phases.total = 0.01, 0.02, 0.05, 0.08
    ok.tls.not_after.FromSeconds(2_000_000_000)
    refused = pb.Result(
        seq=2,
        target="gdmf.apple.com",
        port=443,
        check="http",
        group="device_management",
        outcome=pb.OUTCOME_REFUSED,
        interval_seconds=60,
        detail="connection refused",
    )
    refused.started_at.FromSeconds(int(now) - 5)
    refused.phases.dns, refused.phases.total = 0.01, 0.011
    future = pb.Result(
        seq=3,
        target="x.apple.com",
        port=80,
        check="http",
        group="g",
        outcome=999,
        interval_seconds=60,
    )  # an outcome from a newer probe
    future.started_at.FromSeconds(int(now) - 5)
    state.apply(probe, [ok, refused, future])
    gone = state.connect(pb.Hello(site="nyc", probe_id="pi-9"))
    state.disconnect(gone)
    return state


@pytest.fixture
async def metrics_text():
    state = sample_state(1_700_000_000.0)
    async with (
        TestServer(build_app(state), host="127.0.0.1") as server,
        aiohttp.ClientSession() as session,
        session.get(server.make_url("/metrics")) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await response.text()


def samples(text):
    return {
        # An empty label value is no label at all to Prometheus.
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if v))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text, name, **labels):
    return samples(text)[(name, tuple(sorted(labels.items())))]


CHECK = dict(
    site="ams",
    probe="pi-1",
    target="1-courier.push.apple.com",
    port="5223",
    check="tls",
    group="push",
)
FAILED = dict(
    site="ams",
    probe="pi-1",
    target="gdmf.apple.com",
    port="443",
    check="http",
    group="device_management",
)


async def test_success_outcome_and_phases(metrics_text):
    assert value(metrics_text, "courierwatch_check_success", **CHECK) == 1
    assert value(metrics_text, "courierwatch_check_success", **FAILED) == 0
    assert value(metrics_text, "courierwatch_check_outcome", **FAILED, outcome="refused") == 1
    assert value(metrics_text, "courierwatch_check_results_total", **FAILED, outcome="refused") == 1
    assert value(metrics_text, "courierwatch_check_duration_seconds", **CHECK, phase="tls") == 0.05
    assert (
        value(metrics_text, "courierwatch_tls_leaf_not_after_timestamp_seconds", **CHECK)
        == 2_000_000_000
    )
    # a phase that did not run has no series, rather than a misleading 0
    assert (
        "courierwatch_check_duration_seconds",
        tuple(sorted({**FAILED, "phase": "tls"}.items())),
    ) not in samples(metrics_text)


async def test_unknown_outcome_number_is_labelled_unknown(metrics_text):
    labels = dict(
        site="ams",
        probe="pi-1",
        target="x.apple.com",
        port="80",
        check="http",
        group="g",
        outcome="unknown",
    )
    assert value(metrics_text, "courierwatch_check_outcome", **labels) == 1


async def test_the_collector_process_health_series(metrics_text):
    names = {s.name for family in text_string_to_metric_families(metrics_text)
             for s in family.samples}  # fmt: skip
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
            "process_start_time_seconds"} <= names  # fmt: skip
    assert value(metrics_text, "process_resident_memory_bytes") > 0
    assert value(metrics_text, "process_open_fds") >= 1


async def test_group_facts_series(metrics_text):
    # The sample's probe sent no group facts (an older probe): each group of its results is
    # critical, titled by its id.
    labels = dict(site="ams", probe="pi-1", group="device_management", title="device_management",
                  critical="true")  # fmt: skip
    assert value(metrics_text, "courierwatch_group_info", **labels) == 1


async def test_probe_health_series(metrics_text):
    assert value(metrics_text, "courierwatch_probe_up", site="ams", probe="pi-1") == 1
    assert value(metrics_text, "courierwatch_probe_up", site="nyc", probe="pi-9") == 0
    assert (
        value(
            metrics_text,
            "courierwatch_probe_info",
            site="ams",
            probe="pi-1",
            version="1.2",
            config_digest="d1",
        )
        == 1
    )
    assert (
        value(metrics_text, "courierwatch_probe_results_applied_total", site="ams", probe="pi-1")
        == 3
    )


@pytest.mark.integration
@pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("CI"),
    reason="promtool comes with Debian's prometheus package (tests/run installs it as root)",
)
def test_promtool_accepts_the_exposition_without_warnings(metrics_text):
    lint = subprocess.run(
        ["promtool", "check", "metrics"],
        input=metrics_text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout.strip() == "" and lint.stderr.strip() == "", lint.stdout + lint.stderr


async def test_every_series_is_exposed_once(metrics_text):
    # promtool does not catch duplicate series; Prometheus silently drops all but one.
    lines = [line.rsplit(" ", 1)[0] for line in metrics_text.splitlines()
             if line and not line.startswith("#")]
    assert len(lines) == len(set(lines))


def big_state(now: float, probes: int = 40, checks: int = 100) -> State:
    """Enough series for a body of many chunks."""
    state = State(clock=lambda: now)
    for p in range(probes):
        probe = state.connect(pb.Hello(site=f"site-{p}", probe_id=f"pi-{p}"))
        batch = []
        for c in range(checks):
            r = pb.Result(seq=c + 1, target=f"h{c}.apple.com", port=443, check="tls",
                          group="push", outcome=pb.OUTCOME_OK, interval_seconds=30)  # fmt: skip
            r.started_at.FromSeconds(int(now) - 5)
            r.phases.dns, r.phases.connect, r.phases.tls, r.phases.total = 0.01, 0.02, 0.05, 0.1
            batch.append(r)
        state.apply(probe, batch)
    return state


async def test_a_big_scrape_lets_the_loop_run_between_chunks():
    """Rendering goes chunk by chunk with the loop running in between, so batches and
    /healthz are not held up for the whole of a scrape of a big fleet; and a probe that
    connects meanwhile is in none of its families (not in some of them), but in the next."""
    now = 1_700_000_000.0
    state = big_state(now)
    chunks = len(list(Exposition(state).render_chunks()))
    assert chunks >= 20
    ticks = 0
    scraping = asyncio.Event()
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        await scraping.wait()
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async with (
        TestServer(build_app(state), host="127.0.0.1") as server,
        aiohttp.ClientSession() as session,
    ):
        task = asyncio.create_task(ticker())
        scraping.set()
        async with session.get(server.make_url("/metrics")) as response:
            first = await response.content.readany()  # the scrape has begun rendering
            state.connect(pb.Hello(site="late", probe_id="pi-late"))  # the state changes
            text = (first + await response.read()).decode()
        done.set()
        await task
    # Each chunk is followed by a turn of the loop (the old renderer made the whole body
    # before the first byte went out: a handful of turns, from the socket's back-pressure).
    assert ticks >= chunks - 1
    lines = text.splitlines()  # (the text parser takes a minute over this many series)
    assert sum(line.startswith("courierwatch_check_success{") for line in lines) == 40 * 100
    assert 'courierwatch_probe_up{probe="pi-39",site="site-39"} 1.0' in lines
    assert len(set(lines)) == len(lines)  # no family written twice
    # The probe that connected mid-scrape is in no family of it (the scrape took its probes
    # at the start), and in the next one.
    assert not any('probe="pi-late"' in line for line in lines)
    assert Exposition(state).render().decode().count('probe="pi-late"') > 1
