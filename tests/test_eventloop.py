"""The probe's event loop: uvloop when installed, asyncio's own otherwise, as asked; and the
checks' raw-socket path works the same on both."""

import asyncio
import os
import ssl
import sys

import pytest

from courierwatch.probe import catalog, eventloop
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.net.resolver import Resolver
from courierwatch.probe.runner import run_check
from courierwatch.probe.targets import Target
from courierwatch.probe.trust import TrustStore
from courierwatch.v1 import courierwatch_pb2 as pb
from fakeapple.pki import TestPKI


def test_asyncio_when_asked(monkeypatch):
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    assert eventloop.choose() == ("asyncio", asyncio.new_event_loop)


def _uvloop():
    """uvloop (the fast extra): skipped where it is absent, a failure under CI, where
    tests/run installs it."""
    try:
        import uvloop
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("uvloop is not installed (tests/run installs the fast extra)")
        pytest.skip("uvloop is not installed (pip install '.[fast]')")
    return uvloop


def test_uvloop_by_default_when_installed(monkeypatch):
    uvloop = _uvloop()
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.choose() == ("uvloop", uvloop.new_event_loop)


def test_without_uvloop_auto_falls_back_and_uvloop_is_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert eventloop.choose("auto") == ("asyncio", asyncio.new_event_loop)
    with pytest.raises(ValueError, match=f"^{eventloop.ENV}=uvloop: uvloop is not installed"):
        eventloop.choose("uvloop")


def test_an_unknown_choice_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.setenv(eventloop.ENV, "trio")
    with pytest.raises(ValueError, match=f"^{eventloop.ENV}='trio': must be one of auto, "):
        eventloop.choose()


async def _tcp_and_tls_checks(pki: TestPKI) -> list[pb.Result]:
    leaf = pki.issue("gdmf.apple.com")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(server_context)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    ctx = CheckContext(
        resolver=Resolver(["127.0.0.1"]),  # never asked: the targets are addresses
        trust=TrustStore([str(pki.ca_pem_path)], system=False),
        apple_ranges=catalog.apple().ranges,
        pop_pattern=catalog.apple().pop_pattern,
    )
    async with server:
        return [
            await run_check(
                Target(host="127.0.0.1", port=port, check=kind, sni="gdmf.apple.com", timeout=5),
                ctx,
            )
            for kind in ("tcp", "tls")
        ]


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_checks_run_alike_on_either_loop(choice):
    if choice == "uvloop":
        _uvloop()
    name, factory = eventloop.choose(choice)
    with TestPKI() as pki, asyncio.Runner(loop_factory=factory) as runner:
        tcp, tls = runner.run(_tcp_and_tls_checks(pki))
        assert runner.get_loop().run_until_complete(_running()) == name
    assert tcp.outcome == pb.OUTCOME_OK, tcp.detail
    assert tcp.phases.HasField("connect")
    assert tls.outcome == pb.OUTCOME_OK, tls.detail
    assert tls.phases.HasField("tls") and tls.tls.verified
    assert tls.tls.leaf_subject.startswith("CN=gdmf.apple.com,OU=Testing cert #")
    assert tls.tls.not_after.seconds > 0


async def _running() -> str:
    return eventloop.running()
