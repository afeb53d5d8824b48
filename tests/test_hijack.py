"""A hijacked courier answer is explained: the detail names the missing Apple CNAME chain and the
address, and (dial_hijack, on by default) says what a device gets there: refused, unreachable,
timeout, a server without TLS, or someone else's certificate; never sending application data.

The dialled addresses are real ones outside Apple's ranges, so they live in a network namespace
this test creates (198.18.253.0/30), reached over a veth from the test's own namespace."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from courierwatch.probe import sanity
from courierwatch.v1 import courierwatch_pb2 as pb
from fakeapple import COURIER_ALPN, COURIER_POP, COURIER_SNI, INSPECTION_ORG
from fakeapple.probing import LAB_RANGES, check, check_context, recorded_connects
from lab.netns import Namespace, ip, link, remove_stale

CHAIN = "Apple's CNAME chain to *.push-apple.com.akadns.net"
HIJACKED = "198.18.253.2"  # inside the namespace below; outside the lab's "Apple" (127/8)
ROOT_END = "198.18.253.1"
TLS_PORT, SILENT_PORT, CLOSED_PORT, DROPPED_PORT, UNREACHABLE_PORT = 5223, 5224, 5225, 5226, 5227
START_SECONDS = 10.0


def courier(number, port, **fields):
    return {"host": COURIER_SNI, "port": port, "check": "courier", "numbers": (number,),
            "alpn": (COURIER_ALPN,), "expect_issuer": ("Fake Apple",), "addresses": "apple",
            **fields}  # fmt: skip


async def test_a_bare_answer_names_the_missing_chain_and_the_address(apple):
    apple.dns.add_a("5-courier.push.apple.com", HIJACKED)
    no_dial = (("dial_hijack", False),)
    with recorded_connects() as connects:
        r = await check(check_context(apple), **courier(5, 5223, extra=no_dial))
    assert r.outcome == pb.OUTCOME_DNS_HIJACK, r.detail
    assert r.detail == (
        f"5-courier.push.apple.com answered {HIJACKED} directly, without {CHAIN} "
        "(outside Apple's ranges)"
    )
    assert not [c for c in connects if c[0] == HIJACKED]  # told not to dial: nothing went there


async def test_a_chain_that_lands_elsewhere_names_its_last_hop(apple):
    apple.dns.courier_chain(6, COURIER_POP, HIJACKED)
    r = await check(check_context(apple), **courier(6, 5223, extra=(("dial_hijack", False),)))
    assert r.outcome == pb.OUTCOME_DNS_HIJACK, r.detail
    assert r.detail == (
        f"6-courier.push.apple.com resolved to {HIJACKED} via "
        f"{COURIER_POP}-courier-4.push-apple.com.akadns.net, outside Apple's ranges"
    )


def test_only_courier_names_expect_the_chain():
    ranges = sanity.parse_ranges(LAB_RANGES)
    found = sanity.judge("7-courier.push.apple.com", ["10.1.2.3"], "apple", ranges)
    assert found == (
        pb.OUTCOME_DNS_HIJACK,
        f"7-courier.push.apple.com answered 10.1.2.3 directly, without {CHAIN} (a private address)",
        "10.1.2.3",
    )
    found = sanity.judge("gdmf.apple.com", ["10.1.2.3"], "apple", ranges)
    assert (
        found is not None
        and found.detail == "gdmf.apple.com resolved to 10.1.2.3, a private address"
    )


# What a device would get at the hijacked address: one namespace holding a TLS server with
# someone else's certificate, a server that accepts and never speaks, a closed port, a port
# that drops, and one that answers "host unreachable".
SERVER = (
    textwrap.dedent(
        """
    import socket, ssl, sys, threading
    cert, key = sys.argv[1:3]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["apns-security-v3"])

    def serve(port, tls):
        listener = socket.create_server(("0.0.0.0", port))
        while True:
            sock, _ = listener.accept()
            threading.Thread(target=talk, args=(sock, tls), daemon=True).start()

    def talk(sock, tls):
        sock.settimeout(10)
        try:
            if tls:
                sock = context.wrap_socket(sock, server_side=True)
            received = 0
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                received += len(data)
            print(f"closed after {received} bytes of application data", flush=True)
        except (OSError, ssl.SSLError) as error:
            print(f"closed: {type(error).__name__}", flush=True)
        finally:
            sock.close()

    threading.Thread(target=serve, args=(TLS_PORT, True), daemon=True).start()
    threading.Thread(target=serve, args=(SILENT_PORT, False), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()
    """
    )
    .replace("TLS_PORT", str(TLS_PORT))
    .replace("SILENT_PORT", str(SILENT_PORT))
)


@contextlib.asynccontextmanager
async def elsewhere(tmp_path: Path, cert) -> AsyncIterator[asyncio.subprocess.Process]:
    prefix = "cwhj"
    remove_stale(prefix)
    name = f"{prefix}{os.getpid()}"
    ns = Namespace(name)
    ns.create()
    try:
        link(None, name, ns, "eth0")
        ip("addr", "add", f"{ROOT_END}/30", "dev", name)
        ns.ip("addr", "add", f"{HIJACKED}/30", "dev", "eth0")
        ns.iptables("-A", "INPUT", "-p", "tcp", "--dport", str(DROPPED_PORT), "-j", "DROP")
        ns.iptables("-A", "INPUT", "-p", "tcp", "--dport", str(UNREACHABLE_PORT), "-j", "REJECT",
                    "--reject-with", "icmp-host-unreachable")  # fmt: skip
        script = tmp_path / "server.py"
        script.write_text(SERVER, encoding="utf-8")
        cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        for pem in cert.cert_chain_pems[1:]:
            with cert_file.open("ab") as out:
                out.write(pem.bytes())
        cert.private_key_pem.write_to_path(str(key_file))
        server = await asyncio.create_subprocess_exec(
            *ns.command(sys.executable, str(script), str(cert_file), str(key_file)),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert server.stdout is not None
            async with asyncio.timeout(START_SECONDS):
                assert (await server.stdout.readline()).strip() == b"ready"
            yield server
        finally:
            server.kill()
            await server.wait()
    finally:
        ns.delete()  # takes the veth pair (and so the root end) with it


@pytest.mark.root
async def test_a_hijacked_courier_is_dialled_once_and_described(apple, tmp_path):
    apple.dns.add_a("5-courier.push.apple.com", HIJACKED)
    ctx = check_context(apple)
    box = apple.pki.issue_inspected(COURIER_SNI)
    async with elsewhere(tmp_path, box) as server:
        r = await check(ctx, **courier(5, TLS_PORT))
        assert r.outcome == pb.OUTCOME_DNS_HIJACK, r.detail
        assert r.detail.startswith(f"5-courier.push.apple.com answered {HIJACKED} directly")
        assert f"; dialled {HIJACKED}:{TLS_PORT}: it presents 'CN={COURIER_SNI}" in r.detail
        assert f"issued by 'OU={INSPECTION_ORG} Intermediate CA" in r.detail
        # The handshake was all it got: no application data.
        assert server.stdout is not None
        async with asyncio.timeout(START_SECONDS):
            line = await server.stdout.readline()
        assert line.strip() == b"closed after 0 bytes of application data"

        expected = {
            CLOSED_PORT: f"; dialled {HIJACKED}:{CLOSED_PORT}: refused",
            UNREACHABLE_PORT: f"; dialled {HIJACKED}:{UNREACHABLE_PORT}: unreachable",
            DROPPED_PORT: f"; dialled {HIJACKED}:{DROPPED_PORT}: timeout",
            SILENT_PORT: f"; dialled {HIJACKED}:{SILENT_PORT}: it takes TCP but gives no TLS "
            "handshake (no answer in time)",
        }
        for port, words in expected.items():
            r = await check(ctx, **courier(5, port), timeout=1.0)
            # Still DNS's finding: the dial kept within the check's own timeout.
            assert r.outcome == pb.OUTCOME_DNS_HIJACK, (port, r.detail)
            assert r.detail.endswith(words), (port, r.detail)
