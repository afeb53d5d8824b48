"""The collector's status page: the JSON it is built from, the page's safety headers, and what a
person sees in a real headless Chromium, including an update without a reload."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from promserver import free_port, require, stop

from courierwatch.collector import status
from courierwatch.collector.remote.telemetry import Telemetry
from courierwatch.collector.state import State
from courierwatch.collector.web import build_app
from courierwatch.v1 import courierwatch_pb2 as pb

OK, REFUSED, TIMEOUT = pb.OUTCOME_OK, pb.OUTCOME_REFUSED, pb.OUTCOME_TIMEOUT
SINKHOLE, SKEW = pb.OUTCOME_DNS_SINKHOLE, pb.OUTCOME_CLOCK_SKEW
INTERCEPTED = pb.OUTCOME_TLS_INTERCEPTED
# Markup a hostile or broken probe might send: it must be shown as text, never run.
HOSTILE = '</script><script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


class Fleet:
    """A collector State with six sites: ams-office healthy; ber-lab on the 443 fallback and
    its MDM vendor unreachable, with a hostile detail; cph-store whose probe has been gone for
    two minutes; dub-dc whose couriers work but whose clock is off; edi-hq behind a DNS filter
    that sinks the courier names; fra-dc whose 5223 goes through an inspection box."""

    def __init__(self) -> None:
        self.offset = 0.0  # seconds the state's clock is behind now
        self.state = State(clock=lambda: time.time() - self.offset)
        self.seq = 0
        self.ams = self.probe("ams-office", "pi-ams-1")
        self.report(self.ams, couriers=(OK, OK))
        ber = self.probe("ber-lab", "pi-ber-1")
        self.report(ber, couriers=(REFUSED, OK))
        self.report(
            ber, extra=[("mdm.example.net", 443, "tls", "device_management", TIMEOUT, HOSTILE)]
        )
        self.offset = 120.0  # cph-store reported, then lost its stream, two minutes ago
        cph = self.probe("cph-store", "pi-cph-1")
        self.report(cph, couriers=(OK, OK))
        self.state.disconnect(cph)
        self.offset = 0.0
        dub = self.probe("dub-dc", "pi-dub-1")
        self.report(dub, couriers=(OK, OK),
                    extra=[("time.apple.com", 123, "ntp", "device_setup", SKEW,
                            "clock off by +5.000 s")])  # fmt: skip
        edi = self.probe("edi-hq", "pi-edi-1")
        self.report(edi, couriers=(SINKHOLE, SINKHOLE))
        fra = self.probe("fra-dc", "pi-fra-1")
        self.report(fra, couriers=(INTERCEPTED, OK))

    def probe(self, site: str, probe_id: str):
        return self.state.connect(pb.Hello(site=site, probe_id=probe_id, software_version="0.1"))

    def report(
        self,
        probe,
        couriers: tuple[int, int] | None = None,
        extra: list[tuple[str, int, str, str, int, str]] = (),
        family: str = "ipv4",
    ) -> None:
        rows = list(extra)
        if couriers:
            rows += [
                ("courier.push.apple.com", port, "courier", "push", outcome, "")
                for port, outcome in zip((5223, 443), couriers, strict=True)
            ]
        results = []
        for target, port, check, group, outcome, detail in rows:
            self.seq += 1
            result = pb.Result(
                seq=self.seq,
                target=target,
                port=port,
                check=check,
                group=group,
                outcome=outcome,
                detail=detail,
                interval_seconds=30,
                via="direct",
                address_family=family,
                pop="eu-central" if check == "courier" else "",
            )
            result.started_at.FromNanoseconds(int(self.state.clock() * 1e9))
            results.append(result)
        self.state.apply(probe, results)


@contextlib.asynccontextmanager
async def collector_http(state: State, remote_write: Telemetry | None = None) -> AsyncIterator[str]:
    runner = web.AppRunner(build_app(state, remote_write=remote_write))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def test_snapshot_puts_the_worst_site_first_and_says_why():
    snap = status.snapshot(Fleet().state)
    assert [(s["site"], s["state"]) for s in snap["sites"]] == [
        ("ber-lab", "unreachable"),
        ("fra-dc", "intercepted"),
        ("edi-hq", "filtered"),
        ("dub-dc", "degraded"),
        ("cph-store", "probe_offline"),
        ("ams-office", "ok"),
    ]
    assert snap["summary"] == {
        "unreachable": 1,
        "intercepted": 1,
        "filtered": 1,
        "degraded": 1,
        "probe_offline": 1,
        "ok": 1,
    }
    (ber,) = snap["sites"][0]["probes"]
    assert ber["ports"] == [{"port": 5223, "status": "refused"}, {"port": 443, "status": "ok"}]
    assert ber["pop"] == "eu-central" and ber["up"] and ber["failing"] == 2
    # The worst cause decides; every cause is listed with what was seen.
    assert [(c["state"], c["cause"], c["group"]) for c in ber["causes"]] == [
        ("unreachable", "group_down", "device_management"),
        ("degraded", "fallback_only", "push"),
    ]
    assert ber["causes"][1]["detail"] == "courier.push.apple.com: 5223 refused; 443 works"
    assert ber["couriers"] == "degraded"
    # Couriers first, then the other failures.
    assert [(f["target"], f["outcome"]) for f in ber["findings"]] == [
        ("courier.push.apple.com", "refused"),
        ("mdm.example.net", "timeout"),
    ]


@pytest.mark.parametrize(
    ("extra", "cause"),
    [
        (("time.apple.com", 123, "ntp", "device_setup", SKEW, "clock off by +90.0 s"),
         "clock_skew"),
        (("api.push.apple.com", 443, "tls", "push_provider", pb.OUTCOME_TLS_ALPN_MISMATCH,
          "negotiated http/1.1, not h2"), "provider_api_h2"),
    ],
)  # fmt: skip
def test_a_site_whose_clock_or_provider_api_is_dead_is_not_green(extra, cause):
    fleet = Fleet()
    probe = fleet.probe("fra-1", "pi-fra-1")
    fleet.report(probe, couriers=(OK, OK), extra=[extra])
    (site,) = [s for s in status.snapshot(fleet.state)["sites"] if s["site"] == "fra-1"]
    assert site["state"] == "degraded"
    (found,) = site["probes"][0]["causes"]
    assert (found["cause"], found["detail"]) == (cause, f"{extra[0]}: {extra[5]}")


def test_a_site_whose_ipv6_is_dead_is_not_green():
    fleet = Fleet()
    probe = fleet.probe("fra-1", "pi-fra-1")
    fleet.report(probe, couriers=(OK, OK))  # over IPv4
    fleet.report(probe, extra=[("courier.push.apple.com", 5223, "courier", "push", TIMEOUT, "")],
                 family="ipv6")  # fmt: skip
    (site,) = [s for s in status.snapshot(fleet.state)["sites"] if s["site"] == "fra-1"]
    assert site["state"] == "degraded"
    assert [c["cause"] for c in site["probes"][0]["causes"]] == ["ipv6_broken"]


async def test_api_status_gives_state_causes_pop_and_last_seen_per_site_and_probe():
    fleet = Fleet()
    async with (
        collector_http(fleet.state) as url,
        aiohttp.ClientSession() as session,
        session.get(url + "/api/status") as response,
    ):
        assert response.status == 200 and response.content_type == "application/json"
        data = await response.json()
    assert data["sites"] == status.snapshot(fleet.state)["sites"]
    edi = {s["site"]: s for s in data["sites"]}["edi-hq"]
    (probe,) = edi["probes"]
    assert (edi["state"], probe["probe"], probe["state"], probe["pop"]) == (
        "filtered",
        "pi-edi-1",
        "filtered",
        "eu-central",
    )
    assert probe["causes"] == [
        {
            "state": "filtered",
            "cause": "dns_filter",
            "group": "push",
            "detail": "push is blocked: courier.push.apple.com",
        }
    ]
    assert probe["last_seen"] == fleet.state.get(("edi-hq", "pi-edi-1")).last_seen


async def test_api_and_page_are_served_with_the_data_inert():
    fleet = Fleet()
    async with collector_http(fleet.state) as url, aiohttp.ClientSession() as session:
        async with session.get(url + "/api/status") as response:
            assert response.status == 200
            assert (await response.json())["sites"][0]["site"] == "ber-lab"
        async with session.get(url + "/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            policy = response.headers["Content-Security-Policy"]
            page = await response.text()
        async with session.get(url + "/metrics") as response:
            assert response.status == 200  # the status routes leave /metrics alone
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in page and "default-src 'none'" in policy
    assert "{{" not in page
    # The hostile detail is in the initial data, with nothing that could end the <script>.
    initial = page.split('<script id="initial" type="application/json">')[1].split("</script>")[0]
    assert "<" not in initial
    assert json.loads(initial)["sites"][0]["probes"][0]["findings"][1]["detail"] == HOSTILE


# --- In a real browser ------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    # Belt and braces for "tests talk to 127.0.0.0/8 only": no other name resolves.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


class Page:
    """One browser tab over the DevTools protocol: evaluate JavaScript, get plain values."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.last_id = 0

    async def send(self, method: str, seconds: float = 10, **params: Any) -> dict[str, Any]:
        """One DevTools command and its result; events in between are skipped."""
        self.last_id += 1
        await self.ws.send_json({"id": self.last_id, "method": method, "params": params})
        try:
            async with asyncio.timeout(seconds):
                async for message in self.ws:
                    answer = json.loads(message.data)
                    if answer.get("id") == self.last_id:
                        if "error" in answer:
                            raise AssertionError(f"{method}: {answer['error']}")
                        return answer["result"]
        except TimeoutError:
            raise AssertionError(f"no answer within {seconds} s to {method} {params}") from None
        raise AssertionError("the browser closed the connection")

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def evaluate(self, expression: str, seconds: float = 10) -> Any:
        """The value of `expression`; a promise is awaited (so waiting happens in the page)."""
        result = await self.send(
            "Runtime.evaluate",
            seconds,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def until(self, condition: str, seconds: float = 10) -> Any:
        """Waits until the JavaScript `condition` is truthy, re-checking it on every DOM
        change (a MutationObserver: an event, not a poll); returns its value."""
        return await self.evaluate(
            f"""new Promise(resolve => {{
            const check = () => {{
                const value = document.body && ({condition});
                if (value) resolve(value);
                return value;
            }};
            if (!check()) new MutationObserver((_, observer) => {{
                if (check()) observer.disconnect();
            }}).observe(document, {{subtree: true, childList: true, characterData: true}});
        }})""",
            seconds,
        )


@contextlib.asynccontextmanager
async def chromium(tmp: Path) -> AsyncIterator[Page]:
    """Headless Chromium with one blank tab, driven over its DevTools port on 127.0.0.1."""
    binary = require("chromium")
    port = free_port()
    log = (tmp / "chromium.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        binary,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp / 'profile'}",
        f"--remote-debugging-port={port}",
        "about:blank",
        stdout=log,
        stderr=log,
    )
    try:
        async with aiohttp.ClientSession() as session:
            targets = await devtools_targets(session, f"http://127.0.0.1:{port}/json/list", process)
            (page,) = [t for t in targets if t["type"] == "page"]
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        await stop(process)
        log.close()


async def devtools_targets(session: aiohttp.ClientSession, url: str, process) -> list[dict]:
    """Chromium's tabs, once its DevTools endpoint answers (it has no other ready signal)."""
    async with asyncio.timeout(30):
        while process.returncode is None:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    targets = await response.json()
                    if any(t["type"] == "page" for t in targets):
                        return targets
            await asyncio.sleep(0.1)
    raise AssertionError(f"chromium exited with status {process.returncode}")


@pytest.mark.integration
@pytest.mark.browser
async def test_a_person_sees_sites_couriers_and_findings_and_updates_without_reload(tmp_path):
    fleet = Fleet()
    async with collector_http(fleet.state) as url, chromium(tmp_path) as page:
        await page.navigate(url + "/?refresh=1")
        text = await page.until(
            'document.body.innerText.includes("ams-office") && document.body.innerText'
        )
        for seen in (
            "ams-office",
            "ber-lab",
            "cph-store",
            "degraded",
            "probe offline",
            "pi-ber-1",
            "fallback_only (push): courier.push.apple.com: 5223 refused; 443 works",
            "clock_skew (device_setup): time.apple.com: clock off by +5.000 s",
            "dns_filter (push): push is blocked: courier.push.apple.com",
            "eu-central",
            "refused",
            "timeout",
            "mdm.example.net:443",
        ):
            assert seen in text, seen
        # The hostile detail is shown as the text it is, and nothing of it ran.
        assert HOSTILE in text
        assert await page.evaluate(
            "window.pwned === undefined && document.querySelectorAll('img').length === 0"
        )
        sites = await page.evaluate(
            "[...document.querySelectorAll('td.site')]"
            ".map(td => td.innerText.replace(/\\s+/g, ' '))"
        )
        assert sites == ["ber-lab unreachable", "fra-dc intercepted", "edi-hq filtered",
                         "dub-dc degraded", "cph-store probe offline", "ams-office ok"]  # fmt: skip
        # Each site is coloured by its state: red, orange-red, orange, yellow, grey, green.
        colours = await page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('td.site .state')]"
            ".map(b => [b.textContent, getComputedStyle(b).backgroundColor]))"
        )
        assert colours == {
            "unreachable": "rgb(255, 217, 214)",
            "intercepted": "rgb(255, 185, 138)",
            "filtered": "rgb(255, 216, 168)",
            "degraded": "rgb(255, 241, 194)",
            "probe offline": "rgb(230, 230, 234)",
            "ok": "rgb(216, 245, 221)",
        }

        # ams-office loses its couriers; the open page shows it by itself, without a reload.
        await page.evaluate("window.sameDocument = true")
        fleet.report(fleet.ams, couriers=(TIMEOUT, TIMEOUT))
        sites = await page.until(
            "[...document.querySelectorAll('td.site')]"
            ".map(td => td.innerText.replace(/\\s+/g, ' '))"
            ".filter(s => s.startsWith('ams-office unreachable')).length"
            " && [...document.querySelectorAll('td.site')]"
            ".map(td => td.innerText.replace(/\\s+/g, ' '))"
        )
        assert sites[0] == "ams-office unreachable"  # now the worst, so first
        assert await page.evaluate("window.sameDocument === true")
        assert await page.evaluate("document.title") == "(5) courierwatch status"
