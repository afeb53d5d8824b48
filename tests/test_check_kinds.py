"""Check kinds are specs: adding one is adding a module, and every other place follows from it."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from courierwatch.common.configfile import ConfigError
from courierwatch.probe import catalog, checks
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.checks.spec import KindSpec, Option
from courierwatch.probe.config import load_probe_config
from courierwatch.probe.net.resolver import Resolver
from courierwatch.probe.runner import run_check
from courierwatch.probe.trust import TrustStore
from courierwatch.v1 import courierwatch_pb2 as pb

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- check-kinds:begin -->", "<!-- check-kinds:end -->"

# A whole kind from outside the package, in one module: its run function and its spec.
ECHO_KIND = '''
"""echo: the port sends back the line it is sent."""

from __future__ import annotations

from courierwatch.common.configfile import to_int, to_str
from courierwatch.probe.checks import steps
from courierwatch.probe.checks.spec import KindSpec, Option
from courierwatch.probe.failures import CheckFailure
from courierwatch.v1 import courierwatch_pb2 as pb

GREETING = Option("greeting", to_str(), "the line sent", "a string", required=True)
TIMES = Option("times", to_int(1, 5), "how often it is sent", "1 to 5", default=1)


async def run(target, ctx, result):
    line = (target.option("greeting") + "\\n").encode()
    connection = await steps.connect(target, ctx, result)
    try:
        started = connection.mark()
        for _ in range(target.option("times")):
            await connection.write(line)
            answer = await connection.readline()
            if answer != line:
                raise CheckFailure(pb.OUTCOME_PROTOCOL_ERROR, f"echoed {answer!r}")
        result.phases.first_byte = connection.since(started)
    finally:
        await connection.close()


SPEC = KindSpec(
    name="echo",
    run=run,
    summary="the port echoes a line",
    options=(GREETING, TIMES),
    default_port=7,
    per_family=True,
    via_proxy=True,
    facts=(*steps.CONNECT_FACTS, "phases.first_byte"),
)
'''


def import_file(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def echo_kind(tmp_path: Path) -> Iterator[KindSpec]:
    module_path = tmp_path / "echo_kind.py"
    module_path.write_text(ECHO_KIND, encoding="utf-8")
    spec = checks.register(import_file(module_path).SPEC)
    yield spec
    checks.unregister(spec.name)


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    heard: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(10):  # bounded: the kind sends at most 5 lines
            line = await reader.readline()
            if not line:
                break
            heard.append(line)
            writer.write(line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], heard


def write_config(tmp_path: Path, targets: str) -> str:
    path = tmp_path / "probe.yaml"
    text = "catalog: {groups: []}\ntargets:\n" + textwrap.indent(textwrap.dedent(targets), "  ")
    path.write_text(text, encoding="utf-8")
    return str(path)


def load(path: str):
    return load_probe_config(path, require_identity=False, host_has_ipv6=lambda: False)


def context() -> CheckContext:
    return CheckContext(
        resolver=Resolver(["127.0.0.1"]),  # never asked: the target is an address literal
        trust=TrustStore(),
        apple_ranges=catalog.apple().ranges,
        pop_pattern=catalog.apple().pop_pattern,
    )


async def test_a_kind_from_one_module_is_configured_and_run(
    tmp_path: Path, echo_kind: KindSpec, echo_server: tuple[int, list[bytes]]
) -> None:
    port, heard = echo_server
    path = write_config(
        tmp_path,
        f"""
        - {{host: 127.0.0.1, port: {port}, check: echo, greeting: hello, times: 2}}
        - {{host: 127.0.0.1, check: echo, greeting: hi}}
        """,
    )
    config = load(path)
    ours, default_port = config.targets
    assert (ours.check, ours.family, ours.option("greeting"), ours.option("times")) == (
        "echo", "ipv4", "hello", 2,
    )  # fmt: skip
    assert (default_port.port, default_port.option("times")) == (7, 1)

    result = await run_check(ours, context())
    assert result.outcome == pb.OUTCOME_OK, result.detail
    assert (result.check, result.peer_address) == ("echo", "127.0.0.1")
    assert result.phases.HasField("connect") and result.phases.HasField("first_byte")
    assert heard == [b"hello\n", b"hello\n"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("{host: 127.0.0.1, check: echo}", "targets[0].greeting: is required"),
        ("{host: 127.0.0.1, check: echo, greeting: a, times: 9}",
         "targets[0].times: must be an integer from 1 to 5, got 9"),
        ("{host: 127.0.0.1, port: 1, check: tcp, greeting: a}",
         "targets[0].greeting: not valid for a tcp check"),
        ("{host: 127.0.0.1, check: echo, greeting: a, path: /}",
         "targets[0].path: not valid for a echo check"),
        ("{host: 127.0.0.1, check: echo, greting: a}",
         "targets[0]: unknown key 'greting' (did you mean 'greeting'?)"),
    ],
)  # fmt: skip
def test_a_registered_kind_s_options_are_validated_like_any(
    tmp_path: Path, echo_kind: KindSpec, target: str, message: str
) -> None:
    path = write_config(tmp_path, f"- {target}\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}:3: {message}"


def test_unregistered_the_kind_is_unknown_again(tmp_path: Path, echo_kind: KindSpec) -> None:
    checks.unregister(echo_kind.name)
    try:
        path = write_config(tmp_path, "- {host: 127.0.0.1, check: echo, greeting: a}\n")
        with pytest.raises(ConfigError, match="unknown key 'greeting'"):
            load(path)
    finally:
        checks.register(echo_kind)


def test_registry_refuses_clashes(echo_kind: KindSpec) -> None:
    with pytest.raises(ValueError, match="already registered"):
        checks.register(echo_kind)
    other_path = Option("path", int, "a number", "an integer")
    with pytest.raises(ValueError, match="option 'path' parses unlike http's"):
        checks.register(KindSpec("other", echo_kind.run, "x", options=(other_path,)))
    with pytest.raises(ValueError, match="option 'port' is taken"):
        KindSpec("other", echo_kind.run, "x", options=(Option("port", int, "p", "an integer"),))
    assert "other" not in checks.kinds()


def test_built_in_kinds_are_the_modules_with_a_spec() -> None:
    assert sorted(checks.kinds()) == ["courier", "dns", "dns_clients", "http", "ntp", "tcp", "tls"]
    assert {name: spec.run for name, spec in checks.kinds().items()} == checks.CHECKS
    ports = {name: spec.default_port for name, spec in checks.kinds().items()}
    assert ports == {"courier": None, "dns": 53, "dns_clients": 53, "http": None, "ntp": 123,
                     "tcp": None, "tls": None}  # fmt: skip
    assert [n for n, s in checks.kinds().items() if s.per_family] == [
        "courier", "http", "ntp", "tcp", "tls",
    ]  # fmt: skip
    proxied = [name for name, spec in checks.kinds().items() if spec.via_proxy]
    assert proxied == ["courier", "http", "tcp", "tls"]


def _has_field(message: pb.Result, dotted: str) -> bool:
    descriptor = message.DESCRIPTOR
    for part in dotted.split("."):
        field = descriptor.fields_by_name.get(part)
        if field is None:
            return False
        descriptor = field.message_type
    return True


def test_every_fact_a_kind_fills_is_a_result_field() -> None:
    for spec in checks.kinds().values():
        assert spec.facts, spec.name
        for fact in spec.facts:
            assert _has_field(pb.Result(), fact), (spec.name, fact)
    assert not _has_field(pb.Result(), "tls.nonesuch")


def test_readme_option_table_is_rendered_from_the_specs() -> None:
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"{re.escape(BEGIN)}\n(.*?){re.escape(END)}", text, re.DOTALL)
    assert found, f"README.md has no {BEGIN} ... {END} block"
    assert found[1] == checks.option_table_markdown(), (
        "README.md's check kinds table is stale: paste checks.option_table_markdown() in"
    )


def test_the_table_lists_every_option_of_every_kind(echo_kind: KindSpec) -> None:
    table = checks.option_table_markdown()
    for spec in checks.kinds().values():
        assert f"| `{spec.name}` | {spec.summary} |" in table
        for option in spec.options:
            assert re.search(rf"^\| `{option.name}` \|[^|]*\b{spec.name}\b", table, re.M), option
    assert "| `greeting` | echo | a string | required | the line sent |" in table
    assert "| `alpn` | courier, tls | list of protocol ids | courier: `apns-security-v3`; " in table
