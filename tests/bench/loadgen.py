"""Load generator process: simulated probes, each holding its own Report stream (own TCP
connection) to a collector, sending pre-encoded batches.

Driven over stdin/stdout by the benchmark scripts (harness.Generators):
  -> "connected N"   once every probe has had its Welcome
  <- "go"            start sending
  <- "mark"          -> "mark RESULTS": results acknowledged so far (cumulative)
  <- "pace SECONDS"  from now on each probe sends one batch every SECONDS (0: unpaced)
  <- "acks"          -> "acks S,S,...": seconds from sending each marker to its Ack, since
                       the last "acks" (the collector applies a batch before it acks it)
  <- "stop"          close the streams, -> "stopped RESULTS", exit (also after --max-seconds)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import sys
import time
from collections import deque

import grpc
import workload

from courierwatch.v1 import courierwatch_pb2 as pb

METHOD = "/courierwatch.v1.Collector/Report"
# One TCP connection per probe, as in a fleet: gRPC would otherwise share one between
# channels to the same address.
CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)
CONNECTS_AT_ONCE = 200


class Fleet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        checks = workload.results(args.checks, time.time())
        self.templates = workload.templates(checks, args.batch)
        self.acked = 0
        self.go = asyncio.Event()
        self.stop = asyncio.Event()
        self.connected = 0
        self.all_connected = asyncio.Event()
        self.marker_due: set[int] = set()  # probes whose next batch carries a marker
        self.error: Exception | None = None
        self.marker_acks: list[float] = []
        self.interval = args.interval  # seconds between a probe's batches; 0: unpaced

    async def probe(self, index: int, ready: asyncio.Semaphore) -> None:
        try:
            await self._probe(index, ready)
        except Exception as error:  # any failure ends the run, loudly
            if not self.stop.is_set():
                self.error = error
                self.stop.set()

    async def _probe(self, index: int, ready: asyncio.Semaphore) -> None:
        args = self.args
        hello = pb.ProbeMessage(hello=pb.Hello(
            probe_id=f"p{index:05d}", site=args.site, software_version="bench",
            config_digest="0" * 16,
        )).SerializeToString()  # fmt: skip
        async with ready:
            channel = grpc.aio.insecure_channel(args.target, options=CHANNEL_OPTIONS)
            call = channel.stream_stream(METHOD, request_serializer=None,
                                         response_deserializer=None)()  # fmt: skip
            await call.write(hello)
            welcome = pb.CollectorMessage.FromString(await call.read())
        self.connected += 1
        if self.connected == args.count:
            self.all_connected.set()
        round_ = workload.first_round(welcome.welcome.applied_through_seq)
        turn = index % len(self.templates)  # probes start at different places in their cycle
        in_flight: deque[tuple[int, float]] = deque()  # results, when sent if a marker
        loop = asyncio.get_running_loop()
        try:
            await self.go.wait()
            next_send = loop.time()
            first = True
            while not self.stop.is_set():
                while len(in_flight) < args.window and loop.time() >= next_send:
                    template = self.templates[turn % len(self.templates)]
                    message, size, sent = template.encode(round_), template.size, 0.0
                    if index in self.marker_due:
                        self.marker_due.discard(index)
                        sent = time.time()
                        message += workload.marker(template.last_seq(round_) + 1, sent)
                        size += 1
                    await call.write(message)
                    in_flight.append((size, sent))
                    round_, turn = round_ + 1, turn + 1
                    if self.interval:  # paced: the first batch at once, then spread out
                        delay = self.interval * (random.random() if first else 1.0)
                        next_send, first = max(next_send, loop.time()) + delay, False
                if in_flight:
                    if (reply := await call.read()) is grpc.aio.EOF:
                        raise ConnectionError(f"the collector ended probe {index}'s stream")
                    if not pb.CollectorMessage.FromString(reply).HasField("ack"):
                        continue  # a Busy: the batch is held, not acknowledged
                    size, sent = in_flight.popleft()
                    self.acked += size
                    if sent:
                        self.marker_acks.append(time.time() - sent)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), next_send - loop.time())
        finally:
            call.cancel()
            await channel.close()

    async def markers(self) -> None:
        """A few markers a second across this process's probes, round robin."""
        rate = self.args.markers_per_second
        if rate <= 0:
            return
        await self.go.wait()
        for step in range(int(self.args.max_seconds * rate) + 1):
            if self.stop.is_set():
                return
            self.marker_due.add(self.args.first + step % self.args.count)
            await asyncio.sleep(1 / rate)


async def control(fleet: Fleet) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not fleet.stop.is_set():
        line = (await reader.readline()).decode().strip()
        if line == "go":
            fleet.go.set()
        elif line == "mark":
            print(f"mark {fleet.acked}", flush=True)
        elif line == "acks":
            acks, fleet.marker_acks = fleet.marker_acks, []
            print("acks " + ",".join(f"{a:.6f}" for a in acks), flush=True)
        elif line.startswith("pace "):
            fleet.interval = float(line.split()[1])
        elif line in ("stop", ""):  # "" is EOF: the driver went away
            fleet.stop.set()


async def main(args: argparse.Namespace) -> None:
    fleet = Fleet(args)
    ready = asyncio.Semaphore(CONNECTS_AT_ONCE)
    tasks = [asyncio.create_task(fleet.probe(i, ready))
             for i in range(args.first, args.first + args.count)]  # fmt: skip
    tasks.append(asyncio.create_task(fleet.markers()))
    controller = asyncio.create_task(control(fleet))
    try:
        async with asyncio.timeout(args.max_seconds):
            stopped = asyncio.create_task(fleet.stop.wait())
            await asyncio.wait([asyncio.create_task(fleet.all_connected.wait()), stopped],
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if not fleet.stop.is_set():
                print(f"connected {fleet.connected}", flush=True)
            await stopped
    finally:
        fleet.stop.set()
        controller.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if fleet.error is not None:
        raise fleet.error
    print(f"stopped {fleet.acked}", flush=True)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="collector gRPC host:port")
    parser.add_argument("--site", default="bench")
    parser.add_argument("--first", type=int, default=0, help="index of this process's first probe")
    parser.add_argument("--count", type=int, required=True, help="probes in this process")
    parser.add_argument("--checks", type=int, default=20, help="distinct checks per probe")
    parser.add_argument("--batch", type=int, default=100, help="results per batch")
    parser.add_argument("--window", type=int, default=2, help="unacknowledged batches per probe")
    parser.add_argument("--interval", type=float, default=0.0,
                        help="seconds between a probe's batches (0: as fast as acks allow)")
    parser.add_argument("--markers-per-second", type=float, default=0.0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--cpus", default="", help="CPUs to run on, e.g. 1")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.cpus:
        os.sched_setaffinity(0, {int(c) for c in arguments.cpus.split(",")})
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a socket per probe
    with contextlib.suppress(TimeoutError):
        asyncio.run(main(arguments))
