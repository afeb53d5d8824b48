"""A site's path faults as iptables rules. Each site has chains of its own in the router
(filter FORWARD and nat PREROUTING, for its link only, both families), so its faults can be
replaced while the lab runs without touching another site's. Rules match only traffic towards
Apple's addresses: the collector's link is never faulted."""

from __future__ import annotations

from lab import plan
from lab.netns import Namespace
from lab.plan import Service
from lab.site import Site

FAMILIES = (4, 6)
INTERCEPTED = ((Service.COURIER, "443,5223"), (Service.PROVIDER, "443,2197"))


def chain(n: int) -> str:
    return f"cw-site{n}"


def install(router: Namespace, n: int, interface: str) -> None:
    """Empty chains for site n, jumped to from the router's built-in ones."""
    for family in FAMILIES:
        for table, parent in (("filter", "FORWARD"), ("nat", "PREROUTING")):
            router.iptables("-t", table, "-N", chain(n), family=family)
            router.iptables("-t", table, "-A", parent, "-i", interface, "-j", chain(n),
                            family=family)  # fmt: skip


def apply(router: Namespace, n: int, site: Site) -> None:
    """Site n's chains hold exactly `site`'s faults."""
    for family in FAMILIES:
        for table in ("filter", "nat"):
            router.iptables("-t", table, "-F", chain(n), family=family)
        apple = plan.APPLE_NET4 if family == 4 else plan.APPLE_NET6

        def add(*rule: str, table: str = "filter", family: int = family) -> None:
            router.iptables("-t", table, "-A", chain(n), *rule, family=family)

        if family == 6 and site.ipv6 == "broken":
            add("-j", "DROP")
            continue
        for port, how in site.blocked().items():
            verdict = ["REJECT", "--reject-with", "tcp-reset"] if how == "refuse" else ["DROP"]
            add("-d", apple, "-p", "tcp", "--dport", str(port), "-j", *verdict)
        for port, share in site.loss.items():
            for proto in ("tcp", "udp"):
                add("-d", apple, "-p", proto, "--dport", str(port), "-m", "statistic",
                    "--mode", "random", "--probability", f"{share:g}", "-j", "DROP")  # fmt: skip
        redirects = []
        if site.intercept:
            redirects += [(role, ports, Service.INSPECTION) for role, ports in INTERCEPTED]
        elif site.strip_h2:
            redirects.append((Service.PROVIDER, "443,2197", Service.PROVIDER_H1))
        for role, ports, to in redirects:
            add("-d", plan.service(role, family), "-p", "tcp", "-m", "multiport",
                "--dports", ports, "-j", "DNAT", "--to-destination", plan.service(to, family),
                table="nat")  # fmt: skip
