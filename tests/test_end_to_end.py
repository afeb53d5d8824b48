"""Real processes end to end: a collector and a probe over gRPC with mTLS, read on /metrics."""

import asyncio
import signal

import pytest
import trustme
import yaml

from fakeapple import COURIER_ALPN, COURIER_SNI
from processes import courierwatch, key, line_starting, scrape, wait_for_metrics

pytestmark = [pytest.mark.integration]

SITE, PROBE = "e2e-site", "pi-e2e"



@pytest.fixture
def fleet(tmp_path):
    """mTLS material: a fleet CA, the collector's certificate and the probe's."""
    ca = trustme.CA()
    paths = {"ca": tmp_path / "fleet-ca.pem"}
    ca.cert_pem.write_to_path(paths["ca"])
    # The collector takes the probe's identity from CN and its site from OU.
    leaves = {
        "collector": ca.issue_cert("127.0.0.1"),
        "probe": ca.issue_cert(f"{PROBE}.probe", common_name=PROBE, organization_unit_name=SITE),
    }
    for role, leaf in leaves.items():
        paths[f"{role}_cert"] = tmp_path / f"{role}.pem"
        paths[f"{role}_key"] = tmp_path / f"{role}.key"
        leaf.cert_chain_pems[0].write_to_path(paths[f"{role}_cert"])
        leaf.private_key_pem.write_to_path(paths[f"{role}_key"])
    return {name: str(path) for name, path in paths.items()}


def write(path, document) -> str:
    path.write_text(yaml.safe_dump(document))
    return str(path)


def probe_config(tmp_path, apple, fleet, collector: str) -> str:
    fast = {"interval": "1s", "timeout": "0.8s"}
    targets = [
        {"host": COURIER_SNI, "port": apple.courier_port, "check": "courier", "group": "push",
         "numbers": [1, 2, 3], "alpn": [COURIER_ALPN]},
        {"host": "1-courier.push.apple.com", "port": 53, "check": "dns", "group": "push"},
        {"host": "gdmf.apple.com", "port": apple.https_port, "check": "http",
         "group": "device_management"},
        {"host": "gdmf.apple.com", "port": apple.https_port, "check": "tcp",
         "group": "device_management"},
        {"host": "nxdomain.apple.com", "port": 443, "check": "tcp"},
        {"host": "gdmf.apple.com", "port": apple.closed_port, "check": "tcp"},
        {"host": "slowdns.apple.com", "port": 443, "check": "tcp"},
        {"host": "silent.apple.com", "port": apple.silent_port, "check": "tls"},
        {"host": "untrusted.apple.com", "port": apple.untrusted_port, "check": "tls"},
        {"host": "mdmenrollment.apple.com", "port": apple.https_port, "check": "http",
         "path": "/status/503"},
    ]
    return write(tmp_path / "probe.yaml", {
        "site": SITE,
        "probe_id": PROBE,
        "collectors": [collector],
        "transport": {"ca": fleet["ca"], "cert": fleet["probe_cert"], "key": fleet["probe_key"]},
        "resolver": {"nameservers": [apple.host], "port": apple.dns_port},
        "trust": {"anchors": [str(apple.ca_pem_path)], "system": False},
        "catalog": {"groups": []},
        "families": ["ipv4"],
        "spool": {"path": str(tmp_path / "spool.sqlite")},
        "targets": [{**fast, **t} for t in targets],
    })


def check(target, port, kind, group="custom", **more):
    family = {} if kind == "dns" else {"family": "ipv4"}
    return dict(site=SITE, probe=PROBE, target=target, port=str(port), check=kind, group=group,
                via="direct", **family, **more)


async def test_probe_to_collector_to_metrics(tmp_path, apple, fleet):
    collector_yaml = write(tmp_path / "collector.yaml", {
        "listen": {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        "state_dir": str(tmp_path / "collector-state"),
        "transport": {"ca": fleet["ca"], "cert": fleet["collector_cert"],
                      "key": fleet["collector_key"]},
    })
    async with courierwatch("collector", "--config", collector_yaml) as collector:
        ready = await line_starting(collector, "collector ready:", 15)
        grpc_address = ready.split("grpc=")[1].split()[0]
        url = ready.split("metrics=")[1]
        async with courierwatch(
            "probe", "--config", probe_config(tmp_path, apple, fleet, grpc_address)
        ) as probe:
            courier = check(COURIER_SNI, apple.courier_port, "courier", "push")
            https = check("gdmf.apple.com", apple.https_port, "http", "device_management")
            failures = {
                "dns_nxdomain": check("nxdomain.apple.com", 443, "tcp"),
                "refused": check("gdmf.apple.com", apple.closed_port, "tcp"),
                "dns_timeout": check("slowdns.apple.com", 443, "tcp"),
                "timeout": check("silent.apple.com", apple.silent_port, "tls"),
                "tls_untrusted": check("untrusted.apple.com", apple.untrusted_port, "tls"),
                "http_bad_status": check("mdmenrollment.apple.com", apple.https_port, "http"),
            }
            wanted = [
                key("courierwatch_check_success", **courier, pop="eu-central"),
                key("courierwatch_check_success", **https),
                *(key("courierwatch_check_outcome", **labels, outcome=outcome)
                  for outcome, labels in failures.items()),
            ]
            samples = await wait_for_metrics(url, wanted, 30)

            assert samples[key("courierwatch_probe_up", site=SITE, probe=PROBE)] == 1
            # What the probe checks and why travels in its Hello (families: [ipv4] here).
            assert samples[key("courierwatch_probe_families_info", site=SITE, probe=PROBE,
                               families="ipv4", reason="configured")] == 1  # fmt: skip
            assert samples[key("courierwatch_check_success", **courier, pop="eu-central")] == 1
            assert samples[key("courierwatch_pop_info", site=SITE, probe=PROBE,
                               pop="eu-central")] == 1
            assert samples[key("courierwatch_check_success", **https)] == 1
            assert samples[key("courierwatch_check_success",
                               **check("1-courier.push.apple.com", 53, "dns", "push"),
                               pop="eu-central")] == 1
            assert samples[key("courierwatch_check_success",
                               **check("gdmf.apple.com", apple.https_port, "tcp",
                                       "device_management"))] == 1
            for phase in ("dns", "connect", "tls", "first_byte", "total"):
                assert samples[key("courierwatch_check_duration_seconds", **https,
                                   phase=phase)] > 0
            for outcome, labels in failures.items():
                assert samples[key("courierwatch_check_success", **labels)] == 0, outcome
                assert samples[key("courierwatch_check_results_total", **labels,
                                   outcome=outcome)] >= 1
            assert samples[key("courierwatch_check_results_total", **courier,
                               outcome="ok")] >= 1

            probe.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(probe.wait(), 10) == 0

        # The probe is gone: shown down at once, its counters kept.
        samples = await scrape(url)
        assert samples[key("courierwatch_probe_up", site=SITE, probe=PROBE)] == 0
        assert samples[key("courierwatch_check_results_total", **courier, outcome="ok")] >= 1

        collector.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(collector.wait(), 10) == 0
