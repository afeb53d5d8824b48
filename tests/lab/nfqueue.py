"""Delay and jitter on a path without sch_netem: an iptables NFQUEUE rule hands each packet
to a holder process, which lets it go (NF_ACCEPT) once it has been held for DELAY plus a random
share of JITTER.

It speaks nfnetlink_queue itself (a socket, three message types: RFC-less but stable since
Linux 2.6.14, see include/uapi/linux/netfilter/nfnetlink_queue.h) rather than through the
libnetfilter_queue bindings, so nothing needs compiling: NetfilterQueue has no wheel and
Debian 12 packages no Python bindings. Only packet metadata is copied to user space
(NFQNL_COPY_META): the packet's id is all a verdict needs. Packets leave in arrival order
(jitter never reorders: a packet is due no earlier than the one before it), so one batch
verdict releases every packet that is due. The holder runs SCHED_FIFO with a 1 us timer
slack, so it wakes on time even while the machine is busy; the rule has --queue-bypass, so
packets flow unheld whenever no holder listens. Queues belong to a network namespace: the
holder runs inside the namespace whose rule feeds it (`delaying`).

    python -m lab.nfqueue hold --delay 0.05 --jitter 0.01 --max-seconds 60   # the holder
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import os
import random
import select
import signal
import socket
import statistics
import struct
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from lab.children import START_SECONDS, environment, python, stop_process
from lab.netns import Namespace

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 2, 3
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND, NFQNL_COPY_META = 1, 1
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
PR_SET_TIMERSLACK = 29
QUEUE = 0
QUEUE_MAXLEN = 8192
RECEIVE_BUFFER = 8 << 20
MAX_IDLE_WAIT = 0.2  # seconds: the longest sleep, so stop requests are noticed
MAX_WAKE_LATENCY = 0.002  # seconds: longer is a hiccup, not the machine's usual
EARLY = 50e-6  # seconds: a packet due this soon goes now
_NLMSG = struct.Struct("=IHHII")
_NLATTR = struct.Struct("=HH")


def _message(kind: int, flags: int, seq: int, *attributes: bytes) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(QUEUE)) + b"".join(attributes)
    subsystem_kind = NFNL_SUBSYS_QUEUE << 8 | kind
    return _NLMSG.pack(_NLMSG.size + len(body), subsystem_kind, flags, seq, 0) + body


def _attribute(kind: int, data: bytes) -> bytes:
    length = _NLATTR.size + len(data)
    return _NLATTR.pack(length, kind) + data + bytes(-length % 4)


class Queue:
    """One nfnetlink_queue binding (queue QUEUE, IPv4) in this process's network namespace."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, 33, RECEIVE_BUFFER)  # SO_RCVBUFFORCE (root)
        self.sock.bind((0, 0))
        self._configure(
            _attribute(
                NFQA_CFG_CMD, struct.pack("=BxH", NFQNL_CFG_CMD_BIND, socket.htons(socket.AF_INET))
            )
        )
        self._configure(_attribute(NFQA_CFG_PARAMS, struct.pack(">IB", 0, NFQNL_COPY_META)))
        self._configure(_attribute(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", QUEUE_MAXLEN)))
        self.sock.setblocking(False)

    def _configure(self, attribute: bytes) -> None:
        self.sock.send(_message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, 1, attribute))
        reply = self.sock.recv(4096)
        _, kind, *_ = _NLMSG.unpack_from(reply)
        error = struct.unpack_from("=i", reply, _NLMSG.size)[0] if kind == NLMSG_ERROR else 0
        if error:
            raise OSError(-error, f"nfnetlink_queue configuration: {os.strerror(-error)}")

    def packet_ids(self) -> list[int]:
        """Ids of every packet queued since the last call (non-blocking)."""
        ids = []
        for _ in range(10_000):  # datagrams waiting; each carries one or more packets
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            offset = 0
            while offset + _NLMSG.size <= len(data):  # ends: offset grows by >= 16 per pass
                length, kind, *_ = _NLMSG.unpack_from(data, offset)
                if kind == NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET:
                    ids.append(_packet_id(data, offset + _NLMSG.size + 4, offset + length))
                offset += max(16, (length + 3) & ~3)
        return ids

    def release_through(self, packet_id: int) -> None:
        """NF_ACCEPT for every queued packet whose id is at most `packet_id`."""
        verdict = _attribute(NFQA_VERDICT_HDR, struct.pack(">II", NF_ACCEPT, packet_id))
        self.sock.send(_message(NFQNL_MSG_VERDICT_BATCH, NLM_F_REQUEST, 0, verdict))


def _packet_id(data: bytes, offset: int, end: int) -> int:
    while offset + _NLATTR.size <= end:  # ends: offset grows by >= 4 per pass
        length, kind = _NLATTR.unpack_from(data, offset)
        if kind & 0x7FFF == NFQA_PACKET_HDR:
            packet_id: int = struct.unpack_from(">I", data, offset + _NLATTR.size)[0]
            return packet_id
        offset += max(4, (length + 3) & ~3)
    raise ValueError("a queued packet without its header")


def _realtime() -> None:
    """Wake on time although the machine is loaded: FIFO priority, 1 us timer slack."""
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)


def hold(delay: float, max_seconds: float, jitter: float = 0.0) -> None:
    """Hold every queued packet `delay` plus up to `jitter` seconds (uniform) from its arrival
    here, in order, until max_seconds pass, stdin closes or SIGTERM; then release everything.
    Prints how late releases were."""
    _realtime()
    queue = Queue()
    held: collections.deque[tuple[float, int]] = collections.deque()
    lateness: list[float] = []
    stop = time.monotonic() + max_seconds
    stopping = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    print("holding", flush=True)
    watched = [queue.sock, sys.stdin]
    # Waking from select() takes a while on a busy or virtualised machine: wake that much
    # before a packet is due (learnt as it goes), and release what is due within EARLY.
    wake_latency = 0.0
    last_due = 0.0
    while not stopping and time.monotonic() < stop:  # ends: time-bounded
        timer = held[0][0] - wake_latency if held else time.monotonic() + MAX_IDLE_WAIT
        wait = min(MAX_IDLE_WAIT, max(0.0, timer - time.monotonic()))
        readable, _, _ = select.select(watched, [], [], wait)
        now = time.monotonic()
        if not readable and held:
            late = min(MAX_WAKE_LATENCY, max(0.0, now - timer))
            wake_latency += (late - wake_latency) / 16
        if sys.stdin in readable and not sys.stdin.buffer.read1(1):
            break  # whoever started us went away
        for packet_id in queue.packet_ids():
            last_due = max(last_due, now + delay + random.uniform(0.0, jitter))
            held.append((last_due, packet_id))
        last = None
        while held and held[0][0] <= now + EARLY:
            due, last = held.popleft()
            lateness.append(now - due)
        if last is not None:
            queue.release_through(last)
    if held:
        queue.release_through(held[-1][1])
    late = sorted(lateness) or [0.0]
    print(
        f"released {len(lateness)} packets, late by median {1e6 * statistics.median(late):+.0f}"
        f" us, p99 {1e6 * percentile(late, 99):+.0f} us, max {1e6 * late[-1]:+.0f} us"
        f" (after waking {1e6 * wake_latency:.0f} us early)",
        flush=True,
    )


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


# --- for the lab and the benchmarks ----------------------------------------------------------


@dataclass(slots=True)
class Holder:
    report: str = ""  # what the holder said as it stopped: how late its releases were


@contextlib.asynccontextmanager
async def delaying(
    ns: Namespace,
    match: Sequence[str],
    delay: float,
    max_seconds: float,
    jitter: float = 0.0,
) -> AsyncIterator[Holder]:
    """Every packet matching `match` (iptables arguments of an OUTPUT rule in `ns`, such as
    ["-o", "veth0"]) is held `delay` (+ up to `jitter`): the holder runs inside `ns`, then the
    rule goes in; both go at the end."""
    argv = python(
        "lab.nfqueue", "hold", f"--delay={delay}", f"--jitter={jitter}",
        f"--max-seconds={max_seconds}",
    )  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *ns.command(*argv),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=environment(),
    )
    rule = ["OUTPUT", *match, "-j", "NFQUEUE", "--queue-num", str(QUEUE), "--queue-bypass"]
    holder = Holder()
    assert process.stdin is not None and process.stdout is not None
    try:
        ready = await asyncio.wait_for(process.stdout.readline(), START_SECONDS)
        if ready.strip() != b"holding":
            raise RuntimeError(f"the packet holder did not start: {ready!r}")
        ns.iptables("-A", *rule)
        try:
            yield holder
        finally:
            ns.iptables("-D", *rule)
    finally:
        process.stdin.close()  # the holder releases what it holds and reports
        with contextlib.suppress(TimeoutError):
            holder.report = (await asyncio.wait_for(process.stdout.read(), 10)).decode().strip()
        await stop_process(process)


def main() -> None:
    parser = argparse.ArgumentParser(description="hold NFQUEUE packets (inside a namespace)")
    sub = parser.add_subparsers(dest="command", required=True)
    holder = sub.add_parser("hold", help="hold queued packets until stdin closes")
    holder.add_argument("--delay", type=float, required=True, help="seconds")
    holder.add_argument("--jitter", type=float, default=0.0, help="seconds, uniform on top")
    holder.add_argument("--max-seconds", type=float, required=True)
    args = parser.parse_args()
    hold(args.delay, args.max_seconds, args.jitter)


if __name__ == "__main__":
    main()
