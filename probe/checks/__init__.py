"""Check kinds: one module each, registered here by name. Adding a kind is adding a module."""

from courierwatch.probe.checks import courier, dns, http, ntp, tcp, tls
from courierwatch.probe.checks.base import Check

CHECKS: dict[str, Check] = {
    "dns": dns.run,
    "tcp": tcp.run,
    "tls": tls.run,
    "http": http.run,
    "courier": courier.run,
    "ntp": ntp.run,
}
