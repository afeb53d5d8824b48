"""Hostile input through the real gRPC servicer, in process: random bytes as messages, and
valid batches mutated (huge repeated fields, deep nesting, invalid UTF-8, enums out of
range, sequence numbers going backwards, absurd numbers). Never a crash (a servicer that
raises ends the call UNKNOWN): only clean refusals, counted; and a probe streaming alongside
has every result applied, once."""

from __future__ import annotations

import asyncio
import itertools
import math
import queue
import threading
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from courierwatch.collector.config import Limits
from courierwatch.collector.exposition import Exposition
from courierwatch.collector.ingest import SERVICE, Ingest
from courierwatch.collector.state import State
from courierwatch.collector.store import Store
from courierwatch.v1 import courierwatch_pb2 as pb

# How a hostile stream may end: cleanly, or refused with a reason. UNKNOWN (the servicer
# raised), INTERNAL and the rest are failures.
CLEAN = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
         grpc.StatusCode.RESOURCE_EXHAUSTED}  # fmt: skip
# The steady probe speaks only between examples, so its stream must not idle out however slow
# the machine is (idle streams are tested in test_collector_faults).
LIMITS = Limits(max_message_bytes=256 * 1024, max_batch=200, max_targets_per_probe=500,
                max_state_bytes_per_probe=1024 * 1024, idle_timeout=3600.0)  # fmt: skip
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])  # fmt: skip


class Collector:
    """State, store and the servicer on a gRPC server of their own, in a thread's loop."""

    def __init__(self, tmp_path) -> None:
        self.loop = asyncio.new_event_loop()
        self.state = State()
        self._store = Store(tmp_path / "collector.sqlite")
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.port = self.call(self._start())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.ids = itertools.count(1)

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    async def _start(self) -> int:
        await self._store.open()
        ingest = Ingest(self.state, self._store, authorization={}, limits=LIMITS,
                        require_identity=False)  # fmt: skip
        self._server = grpc.aio.server(options=(
            ("grpc.max_receive_message_length", 2 * LIMITS.max_message_bytes),))
        self._server.add_generic_rpc_handlers((ingest.handler(),))
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return port

    async def _stop(self) -> None:
        await self._server.stop(1)
        await self._store.close()

    def close(self) -> None:
        self.channel.close()
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def report(self, messages: Iterator[bytes]):
        """A Report call sending `messages`; its responses."""
        return self.channel.stream_stream(
            f"/{SERVICE}/Report", request_serializer=None,
            response_deserializer=pb.CollectorMessage.FromString,
        )(messages, timeout=20)  # fmt: skip

    def ends(self, *messages: bytes) -> grpc.StatusCode:
        try:
            for _ in self.report(iter(messages)):
                pass
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    def new_probe(self) -> str:
        """A fresh identity per stream: one stream per identity is the rule under test
        elsewhere, and a stream's end is noticed a moment after the client sees it."""
        return f"pi-fuzz-{next(self.ids)}"

    def render(self) -> bytes:
        async def render() -> bytes:
            return Exposition(self.state).render()

        return self.call(render())


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    collector = Collector(tmp_path_factory.mktemp("fuzz"))
    yield collector
    collector.close()


class Steady:
    """A well-behaved probe with its stream open through the fuzzing."""

    def __init__(self, collector: Collector) -> None:
        self._requests: queue.Queue[bytes | None] = queue.Queue()
        self._requests.put(hello("pi-steady"))
        self._responses = collector.report(iter(self._requests.get, None))
        assert next(self._responses).HasField("welcome")
        self.seq = 0

    def send(self, n: int) -> int:
        """Send n results; the seq acknowledged."""
        results = [result(self.seq + i + 1, target=f"steady-{i}") for i in range(n)]
        self.seq += n
        self._requests.put(message(results))
        return next(self._responses).ack.through_seq

    def close(self) -> None:
        self._requests.put(None)
        for _ in self._responses:
            pass


@pytest.fixture(scope="module")
def steady(collector):
    probe = Steady(collector)
    assert probe.send(5) == 5
    yield probe
    probe.close()


def hello(probe_id: str) -> bytes:
    return pb.ProbeMessage(hello=pb.Hello(probe_id=probe_id, site="fuzz")).SerializeToString()


def result(seq: int, **fields) -> pb.Result:
    values = {"target": "courier.push.apple.com", "port": 5223, "check": "courier",
              "group": "push", "outcome": pb.OUTCOME_OK, "interval_seconds": 30, **fields}
    return pb.Result(seq=seq, **values)


def message(results: list[pb.Result]) -> bytes:
    return pb.ProbeMessage(batch=pb.ResultBatch(results=results)).SerializeToString()


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field, as the wire has it."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def in_batch(result_bytes: bytes) -> bytes:
    """A ProbeMessage whose batch holds one result given as raw bytes."""
    return field(2, field(1, result_bytes))


def nested_groups(depth: int) -> bytes:
    """An unknown field (99) of `depth` groups, one inside the other: parsers recurse."""
    return varint(99 << 3 | 3) * depth + varint(99 << 3 | 4) * depth


floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, -1.0, 1e308, math.nan, math.inf, -math.inf]))
text = st.text(max_size=300)
one_result = st.builds(
    lambda seq, target, port, outcome, interval, detail, pop, addresses, seconds: result(
        seq, target=target, port=port, outcome=outcome, interval_seconds=interval,
        detail=detail, pop=pop, addresses=addresses, started_at={"seconds": seconds}),
    seq=st.integers(0, 2**64 - 1),
    target=st.one_of(st.just("courier.push.apple.com"), text),
    port=st.integers(0, 2**32 - 1),
    outcome=st.integers(-(2**31), 2**31 - 1),  # out of range: an open enum
    interval=floats,
    detail=st.one_of(text, st.builds(lambda n: "x" * n, st.integers(0, 200_000))),
    pop=st.one_of(st.just(""), text),
    addresses=st.lists(text, max_size=20),
    seconds=st.integers(-62135596800, 253402300799),  # what a Timestamp may hold
)  # fmt: skip


def mutated() -> st.SearchStrategy[bytes]:
    """One message of a valid shape, or bent out of it."""
    return st.one_of(
        st.lists(one_result, max_size=30).map(message),
        # Huge repeated fields: a result with thousands of addresses or CNAMEs.
        st.integers(1000, 20_000).map(lambda n: message([result(
            1, addresses=["192.0.2.1"] * n, cname_chain=["a.example"] * n)])),
        st.integers(1, 5000).map(lambda depth: in_batch(
            result(1).SerializeToString() + nested_groups(depth))),
        # Invalid UTF-8 in a string field (target, detail).
        st.sampled_from([2, 14]).map(lambda number: in_batch(
            result(1).SerializeToString() + field(number, b"\xff\xfe\xc3("))),
        # Sequence numbers going backwards, and repeated.
        st.lists(st.integers(1, 50), min_size=1, max_size=50).map(
            lambda seqs: message([result(seq) for seq in seqs])),
        # Many distinct checks, past the per-probe limit.
        st.integers(100, 199).map(lambda n: message(
            [result(i + 1, target=f"t{i}-{n}.example") for i in range(n)])),
        st.builds(lambda seconds, nanos: pb.ProbeMessage(health=pb.Health(
            sent_at={"seconds": seconds, "nanos": nanos},
            loop_lag_seconds=math.nan)).SerializeToString(),
                  st.integers(-62135596800, 253402300799), st.integers(0, 999_999_999)),
        st.binary(max_size=2000),
    )  # fmt: skip


@FUZZ
@given(st.binary(max_size=4000))
def test_random_bytes_as_the_first_message_are_refused_cleanly(collector, steady, raw):
    assert collector.ends(raw) in CLEAN


@FUZZ
@given(st.lists(mutated(), min_size=1, max_size=4))
def test_mutated_batches_never_crash_the_servicer(collector, steady, messages):
    assert collector.ends(hello(collector.new_probe()), *messages) in CLEAN


def test_the_steady_probe_was_unaffected_and_everything_still_renders(collector, steady):
    """After the fuzzing when the module runs whole, and after these hostile messages of its
    own in any case (run alone, it still tests what its name says)."""
    refused = dict(collector.state.refused)
    assert collector.ends(b"\xff") == grpc.StatusCode.INVALID_ARGUMENT
    assert collector.ends(hello(collector.new_probe()), in_batch(nested_groups(200))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert collector.state.refused["malformed"] == refused.get("malformed", 0) + 2
    # Found by the fuzzing: a number beyond what the store holds stopped the collector.
    assert collector.ends(hello(collector.new_probe()), message([result(2**64 - 1)])) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert collector.state.refused["seq_out_of_range"] > refused.get("seq_out_of_range", 0)
    assert steady.send(7) == steady.seq
    (probe,) = [p for p in collector.state.probes() if p.probe_id == "pi-steady"]
    assert probe.applied == steady.seq and probe.duplicates == 0
    assert sum(probe.counts.values()) == steady.seq
    text = collector.render()
    assert b'courierwatch_probe_up{probe="pi-steady",site="fuzz"} 1.0' in text
