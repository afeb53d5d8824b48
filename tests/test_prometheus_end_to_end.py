"""The NOC's view, proven with real parts: two sites' probe processes against the little
Apple, a collector process, and Debian's Prometheus with the shipped rules, in both modes:
scraping the collector, or receiving its remote writes (and scraping only what is not written:
`up` and the collector's own health). One site reaches the couriers on 5223 and 443 (but its
resolver does not know the software update catalog); the other's couriers are refused. The
courier-lost alert fires for that site only, and every dashboard query returns data."""

import contextlib
import random
import sys

import pytest
import yaml
from promserver import fast_rules, free_port, prometheus

from fakeapple import COURIER_ALPN, COURIER_POP, COURIER_SNI, FakeDNS, TLSServer
from processes import courierwatch, line_starting

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root(reason="couriers listen on their real ports, 443 needs root"),
]


def probe_config(tmp_path, site, dns, apple, collector) -> str:
    fast = {"interval": "1s", "timeout": "0.5s"}
    document = {
        "site": site,
        "probe_id": f"pi-{site}",
        "collectors": [collector],
        "transport": {"insecure": True},
        "resolver": {"nameservers": [dns.host], "port": dns.port},
        "trust": {"anchors": [str(apple.ca_pem_path)]},
        "catalog": {"groups": []},
        "families": ["ipv4"],
        "spool": {"path": str(tmp_path / f"{site}.sqlite")},
        "targets": [
            *({"host": COURIER_SNI, "port": port, "check": "courier", "group": "push",
               "numbers": [1, 2, 3], "alpn": [COURIER_ALPN], **fast} for port in (5223, 443)),
            {"host": "1-courier.push.apple.com", "port": 53, "check": "dns", "group": "push",
             **fast},
            {"host": "time.apple.com", "port": apple.ntp_port, "check": "ntp",
             "group": "device_setup", **fast},
            {"host": "gdmf.apple.com", "port": apple.https_port, "check": "http",
             "group": "device_management", **fast},
            # A finding even the healthy site has, so the findings panels show something.
            {"host": "mesu.apple.com", "port": 443, "check": "tcp", "group": "software_updates",
             **fast},
        ],
    }
    path = tmp_path / f"{site}.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


@pytest.mark.parametrize("mode", ["scrape", "remote_write"])
async def test_courier_lost_fires_for_the_blocked_site_only(mode, tmp_path, apple):
    written = mode == "remote_write"
    # Two loopback addresses of this run's own: couriers answer on one, nothing on the other.
    base = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}"
    reachable, blocked = f"{base}.1", f"{base}.2"
    cert = apple.pki.issue(COURIER_SNI)
    async with (
        contextlib.AsyncExitStack() as stack,
        FakeDNS() as healthy_dns, FakeDNS() as blocked_dns,
        TLSServer(cert, [COURIER_ALPN], host=reachable, port=5223),
        TLSServer(cert, [COURIER_ALPN], host=reachable, port=443),
    ):
        for dns, address in ((healthy_dns, reachable), (blocked_dns, blocked)):
            for n in (1, 2, 3):
                dns.courier_chain(n, COURIER_POP, address)
            dns.add_a("time.apple.com", apple.host)
            dns.add_a("gdmf.apple.com", apple.host)
        # Prometheus first (the collector writes to it), so the collector's port is chosen.
        http = f"127.0.0.1:{free_port()}"
        async with prometheus([http], tmp_path, rule_files=fast_rules(tmp_path),
                              receive=written) as prom:
            collector_yaml = tmp_path / "collector.yaml"
            collector_yaml.write_text(yaml.safe_dump({
                "listen": {"grpc": "127.0.0.1:0", "http": http},
                "transport": {"insecure": True},
                "state_dir": str(tmp_path / "collector"),
                **({"remote_write": {"url": prom.write_url, "state_interval": "1s"}}
                   if written else {}),
            }))
            collector = await stack.enter_async_context(
                courierwatch("collector", "--config", str(collector_yaml)))
            ready = await line_starting(collector, "collector ready:", 15)
            grpc = ready.split("grpc=")[1].split()[0]
            async with (
                courierwatch("probe", "--config",
                             probe_config(tmp_path, "healthy", healthy_dns, apple, grpc)),
                courierwatch("probe", "--config",
                             probe_config(tmp_path, "blocked", blocked_dns, apple, grpc)),
            ):
                async def courier_lost() -> list[dict]:
                    return [a for a in await prom.alerts()
                            if a["labels"]["alertname"] == "CourierReachabilityLost"
                            and a["state"] == "firing"]

                fired = await prom.wait_for(courier_lost, 40, "CourierReachabilityLost firing")
                assert [(a["labels"]["site"], a["labels"]["pop"]) for a in fired] == [
                    ("blocked", COURIER_POP)
                ]
                assert "refused" in fired[0]["annotations"]["description"]

                await prom.assert_dashboards_have_data(
                    20, site="healthy", pop=COURIER_POP, probe="pi-healthy"
                )
                # Still only the blocked site, now that everything has had time to fire.
                assert {a["labels"]["site"] for a in await courier_lost()} == {"blocked"}
                healthy = await prom.query('courierwatch_courier_state{site="healthy"}')
                assert [r["metric"]["state"] for r in healthy] == ["ok"]
                # The collector's site state says the same: the outage is the blocked site's.
                states = await prom.query("courierwatch_site_state == 1")
                assert ("blocked", "unreachable") in {
                    (r["metric"]["site"], r["metric"]["state"]) for r in states
                }
                causes = await prom.query('courierwatch_site_cause{cause="couriers_unreachable"}')
                assert [r["metric"]["site"] for r in causes] == ["blocked"]
                loss = await prom.query('courierwatch_path_loss_ratio{site="healthy"}')
                assert {r["metric"]["port"] for r in loss} >= {"5223", "443"}
                # All of it from the mode's own series: written (no collector label), or
                # scraped (the collector's instance); a remote-writing collector's /metrics
                # has none of what it writes.
                scraped = await prom.query('courierwatch_site_cause{instance!=""}')
                assert (scraped == []) == written
                jobs = {r["metric"].get("job") for r in causes}
                assert jobs == {None if written else "courierwatch"}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
