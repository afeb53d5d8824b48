"""The fake Apple works with real clients: dnspython, ssl and aiohttp against 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.asyncresolver
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from fakeapple import (
    COURIER_ALPN,
    COURIER_SNI,
    FakeApple,
    FakeDNS,
    HTTPServer,
    TestPKI,
    closed_port,
)

EDGE = "eu-central-courier-4.push-apple.com.akadns.net."


@pytest.fixture
async def apple(tmp_path: Path) -> AsyncIterator[FakeApple]:
    async with FakeApple(tmp_path) as fake:
        yield fake


def resolver_for(apple: FakeApple, lifetime: float = 2.0) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [apple.host]
    resolver.port = apple.dns_port
    resolver.lifetime = lifetime
    return resolver


# -- DNS ----------------------------------------------------------------------------------------


async def test_courier_chain_resolves_with_every_cname(apple: FakeApple) -> None:
    answer = await resolver_for(apple).resolve("1-courier.push.apple.com", "A")

    assert [rdata.address for rdata in answer] == ["127.0.0.1"]
    assert answer.canonical_name.to_text() == EDGE
    cnames = [rrset[0].target.to_text() for rrset in answer.chaining_result.cnames]
    assert cnames == ["1.courier-push-apple.com.akadns.net.", EDGE]
    sections = [dns.rdatatype.to_text(rrset.rdtype) for rrset in answer.response.answer]
    assert sections == ["CNAME", "CNAME", "A"]
    assert answer.response.flags & dns.flags.AA
    assert answer.response.flags & dns.flags.RA
    assert apple.dns.query_count("1-courier.push.apple.com", "A") == 1
    assert apple.dns.queries["1-courier.push.apple.com", "A"] == 1


async def test_names_are_case_insensitive(apple: FakeApple) -> None:
    answer = await resolver_for(apple).resolve("GDMF.Apple.COM", "A")
    assert [rdata.address for rdata in answer] == ["127.0.0.1"]
    assert apple.dns.query_count("gdmf.apple.com") == 1


@pytest.mark.parametrize("name", ["nxdomain.apple.com", "never-added.example.org"])
async def test_nxdomain_raises(apple: FakeApple, name: str) -> None:
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver_for(apple).resolve(name, "A")


async def test_servfail_raises_no_nameservers(apple: FakeApple) -> None:
    with pytest.raises(dns.resolver.NoNameservers):
        await resolver_for(apple).resolve("servfail.apple.com", "A")


async def test_cname_loop_is_servfail(apple: FakeApple) -> None:
    apple.dns.add_cname("loop-a.apple.com", "loop-b.apple.com")
    apple.dns.add_cname("loop-b.apple.com", "loop-a.apple.com")
    with pytest.raises(dns.resolver.NoNameservers):
        await resolver_for(apple).resolve("loop-a.apple.com", "A")


@pytest.mark.parametrize("rdtype", ["A", "AAAA"])
async def test_name_without_addresses_is_nodata(apple: FakeApple, rdtype: str) -> None:
    with pytest.raises(dns.resolver.NoAnswer):
        await resolver_for(apple).resolve("noaddress.apple.com", rdtype)
    assert apple.dns.query_count("noaddress.apple.com", rdtype) == 1


async def test_dropped_name_times_out(apple: FakeApple) -> None:
    with pytest.raises(dns.resolver.LifetimeTimeout):
        await resolver_for(apple, lifetime=0.3).resolve("slowdns.apple.com", "A")
    assert apple.dns.query_count("slowdns.apple.com") >= 1


async def test_tcp_query(apple: FakeApple) -> None:
    query = dns.message.make_query("2-courier.push.apple.com", "A")
    response = await dns.asyncquery.tcp(query, apple.host, port=apple.dns_port, timeout=2)

    assert response.rcode() == dns.rcode.NOERROR
    assert response.id == query.id
    assert [dns.rdatatype.to_text(rrset.rdtype) for rrset in response.answer] == [
        "CNAME",
        "CNAME",
        "A",
    ]
    assert apple.dns.transports["tcp"] == 1


async def test_truncated_udp_falls_back_to_tcp(apple: FakeApple) -> None:
    apple.dns.add_a("big.apple.com", "127.0.0.2")
    apple.dns.truncate("big.apple.com")
    answer = await resolver_for(apple).resolve("big.apple.com", "A")
    assert [rdata.address for rdata in answer] == ["127.0.0.2"]
    assert apple.dns.transports == {"udp": 1, "tcp": 1}


def test_zone_rejects_bad_data() -> None:
    fake = FakeDNS()
    with pytest.raises(ValueError):
        fake.add_a("bad.apple.com", "not-an-address")
    fake.add_a("taken.apple.com", "127.0.0.1")
    with pytest.raises(ValueError):
        fake.add_cname("taken.apple.com", "elsewhere.apple.com")


# -- TLS ----------------------------------------------------------------------------------------


async def handshake(
    port: int, context: ssl.SSLContext, server_name: str
) -> tuple[str | None, str | None]:
    """Connect, return (ALPN, certificate CN), close cleanly."""
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=server_name
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        subject = dict(item[0] for item in ssl_object.getpeercert()["subject"])
        return ssl_object.selected_alpn_protocol(), subject.get("commonName")
    finally:
        writer.close()
        await writer.wait_closed()


async def test_courier_verifies_as_courier_name_with_alpn(apple: FakeApple) -> None:
    context = apple.pki.client_context(alpn=[COURIER_ALPN])
    alpn, common_name = await handshake(apple.courier_port, context, COURIER_SNI)

    assert (alpn, common_name) == (COURIER_ALPN, COURIER_SNI)
    assert apple.courier.server_names == [COURIER_SNI]
    await apple.courier.wait_connections(1)
    assert apple.courier.handshakes == 1
    assert apple.courier.alpn_selected == [COURIER_ALPN]


async def test_ca_pem_file_is_the_trust_anchor(apple: FakeApple) -> None:
    context = ssl.create_default_context(cafile=str(apple.ca_pem_path))
    _, common_name = await handshake(apple.courier_port, context, COURIER_SNI)
    assert common_name == COURIER_SNI


@pytest.mark.parametrize(
    ("server", "name", "reason"),
    [
        ("untrusted", "untrusted.apple.com", "unable to get local issuer certificate"),
        ("mismatch", "mismatch.apple.com", "Hostname mismatch"),
        ("expired", "expired.apple.com", "certificate has expired"),
    ],
)
async def test_bad_certificates_fail_verification(
    apple: FakeApple, server: str, name: str, reason: str
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError) as failure:
        await handshake(getattr(apple, f"{server}_port"), apple.pki.client_context(), name)
    assert reason in failure.value.verify_message
    assert getattr(apple, server).server_names == [name]  # the hello arrived; no handshake


async def test_untrusted_server_verifies_against_other_ca(apple: FakeApple) -> None:
    context = ssl.create_default_context(cafile=str(apple.other_ca_pem_path))
    _, common_name = await handshake(apple.untrusted_port, context, "untrusted.apple.com")
    assert common_name == "untrusted.apple.com"


async def test_silent_server_handshake_times_out(apple: FakeApple) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await handshake(apple.silent_port, apple.pki.client_context(), "silent.apple.com")
    assert apple.silent.connections == 1


async def test_closed_port_refuses() -> None:
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", closed_port())


async def test_stop_closes_held_connections(tmp_path: Path) -> None:
    async with FakeApple(tmp_path) as fake:
        reader, writer = await asyncio.open_connection(fake.host, fake.silent_port)
        await fake.silent.wait_connections(1)
    try:
        async with asyncio.timeout(1):
            assert await reader.read() == b""
    finally:
        writer.close()
        await writer.wait_closed()


def test_pki_without_directory_cleans_up() -> None:
    with TestPKI() as pki:
        path = pki.ca_pem_path
        assert path.read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert pki.issue("a.apple.com").cert_chain_pems
    assert not path.exists()


# -- HTTP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"), [("/", 200), ("/status/503", 503), ("/status/404", 404)]
)
async def test_https_status_routes(apple: FakeApple, path: str, status: int) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"https://127.0.0.1:{apple.https_port}{path}",
            ssl=apple.pki.client_context(),
            server_hostname="gdmf.apple.com",
        ) as response,
    ):
        assert response.status == status
        if path == "/":
            assert await response.text() == "ok"
    assert apple.https.requests[path] == 1
    assert apple.https.server_names == ["gdmf.apple.com"]


async def test_plain_http_status(apple: FakeApple) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.head(f"{apple.http.url}/status/204") as response,
    ):
        assert response.status == 204


async def test_slow_route_times_out_waiting_for_first_byte(apple: FakeApple) -> None:
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with pytest.raises(TimeoutError):
            async with session.get(f"{apple.http.url}/slow"):
                pass
    assert apple.http.requests["/slow"] == 1


async def test_http_server_stops_quickly_with_slow_handler_pending() -> None:
    server = HTTPServer()
    await server.start()
    loop = asyncio.get_running_loop()
    try:
        timeout = aiohttp.ClientTimeout(sock_read=0.2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with pytest.raises(TimeoutError):
                async with session.get(f"{server.url}/slow"):
                    pass
        # The handler outlives the client (aiohttp does not cancel it); stop must release it
        # rather than sit out the shutdown timeout.
        assert server.requests["/slow"] == 1
    finally:
        started = loop.time()
        await server.stop()
    assert loop.time() - started < 1
