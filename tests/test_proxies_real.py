"""Through a real HTTP proxy (Debian's tinyproxy, really running on 127.0.0.1): plain HTTP asked
in absolute form works, and the proxy's own refusals are named as the proxy's: CONNECT to a
port its ConnectPort list lacks (5223), and a host its filter blocks.

Every target is an address literal, so tinyproxy never asks this machine's resolver."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from courierwatch.probe.net.proxy import ProxySettings
from courierwatch.v1 import courierwatch_pb2 as pb
from fakeapple import COURIER_ALPN, COURIER_SNI, closed_port
from fakeapple.probing import check, check_context

TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
READY = b"Accepting connections"  # tinyproxy's last start-up line
START_SECONDS = 10.0
MAX_LINES = 200

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(TINYPROXY).exists(), reason="tinyproxy not installed"),
]


@contextlib.asynccontextmanager
async def tinyproxy(
    tmp_path: Path, connect_ports: tuple[int, ...], filtered: str = ""
) -> AsyncIterator[ProxySettings]:
    """tinyproxy in the foreground with a generated config; yields where it listens."""
    port = closed_port()
    lines = [f"Port {port}", "Listen 127.0.0.1", "Allow 127.0.0.1", "Timeout 5", "MaxClients 20",
             "LogLevel Info", *(f"ConnectPort {p}" for p in connect_ports)]  # fmt: skip
    if filtered:
        (tmp_path / "filter").write_text(f"{filtered}\n", encoding="utf-8")
        lines += [f'Filter "{tmp_path / "filter"}"', "FilterDefaultDeny No"]
    config = tmp_path / f"tinyproxy-{port}.conf"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        TINYPROXY, "-d", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(START_SECONDS):
            for _ in range(MAX_LINES):
                line = await process.stdout.readline()
                assert line, "tinyproxy exited during start-up"
                if READY in line:
                    break
        # Its log goes on: keep reading so that a full pipe never stalls it.
        drain = asyncio.create_task(_drain(process.stdout))
        try:
            yield ProxySettings("127.0.0.1", port)
        finally:
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
    finally:
        process.terminate()
        await process.wait()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def via(apple, proxy):
    return dataclasses.replace(check_context(apple), proxy=proxy)


def plain(apple, path="/", **fields):
    return {"host": "127.0.0.1", "port": apple.http_port, "check": "http", "tls": False,
            "path": path, "via": "proxy", **fields}  # fmt: skip


async def test_plain_http_through_tinyproxy(apple, tmp_path):
    async with tinyproxy(tmp_path, (443, 5223)) as proxy:
        r = await check(via(apple, proxy), **plain(apple))
        assert (r.outcome, r.http.status) == (pb.OUTCOME_OK, 200), r.detail
        assert apple.http.requests["/"] == 1 and r.peer_address == "127.0.0.1"
        # The origin's own 404, forwarded (tinyproxy adds Via): the endpoint's status.
        r = await check(via(apple, proxy), **plain(apple, "/status/404", expect_status=(200,)))
        assert (r.outcome, r.detail) == (pb.OUTCOME_HTTP_BAD_STATUS, "HTTP status 404")


async def test_a_host_tinyproxy_filters_is_proxy_denied(apple, tmp_path):
    async with tinyproxy(tmp_path, (443,), filtered=r"^127\.0\.0\.1$") as proxy:
        r = await check(via(apple, proxy), **plain(apple))
    assert (r.outcome, r.detail) == (
        pb.OUTCOME_PROXY_DENIED,
        f"proxy {proxy.name} refused GET http://127.0.0.1:{apple.http_port}/: 403 Filtered",
    )
    assert apple.http.requests["/"] == 0


async def test_connect_to_5223_is_denied_without_its_connectport(apple, tmp_path):
    target = {"host": "127.0.0.1", "port": 5223, "check": "tcp", "via": "proxy"}
    async with tinyproxy(tmp_path, (443,)) as proxy:
        r = await check(via(apple, proxy), **target)
    assert (r.outcome, r.detail) == (
        pb.OUTCOME_PROXY_DENIED,
        f"proxy {proxy.name} refused CONNECT 127.0.0.1:5223: 403 Access violation",
    )


async def test_tls_goes_through_a_tinyproxy_tunnel_where_connectport_allows(apple, tmp_path):
    target = {"host": "127.0.0.1", "port": apple.courier_port, "check": "tls", "via": "proxy",
              "sni": COURIER_SNI, "alpn": (COURIER_ALPN,)}  # fmt: skip
    async with tinyproxy(tmp_path, (443, 5223, apple.courier_port)) as proxy:
        r = await check(via(apple, proxy), **target)
    assert (r.outcome, r.tls.alpn) == (pb.OUTCOME_OK, COURIER_ALPN), r.detail
    assert apple.courier.handshakes == 1
    async with tinyproxy(tmp_path, (443, 5223)) as proxy:
        r = await check(via(apple, proxy), **target)
    assert r.outcome == pb.OUTCOME_PROXY_DENIED and "403 Access violation" in r.detail, r.detail
