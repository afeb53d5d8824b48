"""courier: an APNs courier as a device reaches it.

The target is the logical courier service on one port (courier.push.apple.com:5223 or :443).
Each run dials the next numbered courier (N-courier.push.apple.com, N from the target's numbers,
so over time every courier name is exercised) and shakes hands as apsd does: SNI
courier.push.apple.com, ALPN apns-security-v3, the chain verified against Apple Root CA. The
result keeps the logical name as its target (one series per port, not one per number), the
numbered host in dialled_host, and the POP its CNAME chain leads to.
"""

from __future__ import annotations

from courierwatch.probe.checks import steps, tls
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.targets import Target
from courierwatch.v1 import courierwatch_pb2 as pb


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    steps.dial_host(target, ctx, result)  # chosen first, so every step dials the same courier
    connection = await tls.handshake(target, ctx, result)
    await connection.close()
