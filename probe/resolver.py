"""DNS resolution the way a device sees it: the configured resolver, the whole CNAME chain.

dnspython is used rather than getaddrinfo because the system call hides the CNAME chain
(which names the Akamai POP a site is steered to) and cannot be pointed at another server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from courierwatch.probe.checks.base import CheckFailure
from courierwatch.v1 import courierwatch_pb2 as pb

# Record types asked, by the family a target is bound to ("": either, v4 first).
_RDTYPES = {
    "": (dns.rdatatype.A, dns.rdatatype.AAAA),
    "ipv4": (dns.rdatatype.A,),
    "ipv6": (dns.rdatatype.AAAA,),
}


@dataclass(frozen=True, slots=True)
class Resolution:
    addresses: tuple[str, ...]  # A answers first, then AAAA
    cname_chain: tuple[str, ...]  # names followed, without the query name or trailing dots
    seconds: float | None  # None: nothing was looked up (the name is an address)


# Lookups in flight at once (each one or two queries). `courierwatch check` starts every check
# together; a site resolver such as dnsmasq (Pi-hole) refuses beyond 150 concurrent forwards
# and a burst can overflow a UDP receive buffer, which would read as DNS failures.
MAX_LOOKUPS = 32


class Resolver:
    def __init__(self, nameservers: Sequence[str] = (), port: int = 53) -> None:
        # configure=True reads /etc/resolv.conf: the same resolvers the site's devices use.
        self._resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = list(nameservers)
        self._resolver.port = port
        self._slots = asyncio.Semaphore(MAX_LOOKUPS)

    async def resolve(self, name: str, lifetime: float, family: str = "") -> Resolution:
        """Look up A and AAAA in parallel (only one of them for family "ipv4" or "ipv6"); if
        none gives an address, raise the DNS outcome."""
        if is_ip(name):
            return Resolution((name,), (), None)
        async with self._slots:  # the wait for a slot is not the resolver's time
            started = time.perf_counter()
            answers = await asyncio.gather(
                *(self._query(name, rdtype, lifetime) for rdtype in _RDTYPES[family]),
                return_exceptions=True,
            )
            seconds = time.perf_counter() - started
        addresses: list[str] = []
        chain: tuple[str, ...] = ()
        for answer in answers:
            if isinstance(answer, dns.resolver.Answer):
                addresses.extend(rr.to_text() for rr in answer)
                chain = chain or _cname_chain(answer)
        if addresses:
            return Resolution(tuple(addresses), chain, seconds)
        raise _failure(name, family, [a for a in answers if isinstance(a, BaseException)])

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType, lifetime: float) -> object:
        return await self._resolver.resolve(name, rdtype, lifetime=lifetime, search=False)


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _cname_chain(answer: dns.resolver.Answer) -> tuple[str, ...]:
    return tuple(
        rrset[0].target.to_text(omit_final_dot=True) for rrset in answer.chaining_result.cnames
    )


def _failure(name: str, family: str, errors: list[BaseException]) -> CheckFailure:
    """The most telling error of the two lookups decides the outcome."""
    for error in errors:
        if isinstance(error, dns.resolver.NXDOMAIN):
            return CheckFailure(pb.OUTCOME_DNS_NXDOMAIN, f"{name}: no such name")
    for error in errors:
        if isinstance(error, dns.resolver.NoNameservers):
            return CheckFailure(pb.OUTCOME_DNS_SERVFAIL, f"{name}: resolver failed (SERVFAIL)")
    for error in errors:
        if isinstance(error, dns.exception.Timeout):
            return CheckFailure(pb.OUTCOME_DNS_TIMEOUT, f"{name}: no DNS answer in time")
    if all(isinstance(e, dns.resolver.NoAnswer) for e in errors):
        wanted = " or ".join(map(dns.rdatatype.to_text, _RDTYPES[family]))
        return CheckFailure(pb.OUTCOME_DNS_NO_ADDRESS, f"{name}: no {wanted} record")
    return CheckFailure(pb.OUTCOME_ERROR, f"{name}: {errors[0]!r}")
