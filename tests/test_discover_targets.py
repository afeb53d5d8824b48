"""--write-targets: the names outside the catalog as probe targets that the probe's own config
loader accepts, the kind per port seen, couriers with their numbers, nothing guessed."""

from pathlib import Path

from data import make_sample

from courierwatch.discover import targets
from courierwatch.discover.classify import assess
from courierwatch.discover.run import discover
from courierwatch.discover.tally import Tally
from courierwatch.probe.config import load_probe_config

T0 = 1_764_576_000.0


def load(path: Path):
    config = load_probe_config(str(path), require_identity=False, host_has_ipv6=lambda: False)
    return {(t.host, t.port, t.check): t for t in config.targets if t.group == targets.GROUP}


def test_the_samples_targets_load_in_the_probe(tmp_path):
    path = tmp_path / "discovered.yaml"
    written = targets.write(str(path), discover([str(make_sample.SAMPLE)]))
    loaded = load(path)
    assert written == 6
    assert set(loaded) == {
        (host, port, check)
        for host in (
            "metrics.icloud.com",
            "bag.itunes.apple.com",
            "is1-ssl.mzstatic.com",
            "weather-data.apple.com",
            "gspe19-ssl.ls.apple.com",  # the Maps name served by an Akamai CDN name
            "configuration.ls.apple.com",  # asked over TCP
        )
        for port, check in ((53, "dns"), (443, "tls"))
    }
    assert all(t.addresses == "public" for t in loaded.values())
    text = path.read_text()
    # A comment per entry saying where it was seen; families and unresolved names not guessed.
    assert (
        "  # is1-ssl.mzstatic.com: 20 queries from 6 clients, 2025-12-01 08:00 to 08:57 UTC" in text
    )
    assert "TCP 443 seen" in text and "blocked by the site's DNS filter" in text
    assert (
        "#   p23-caldav.icloud.com: one of 2 names pN-caldav.icloud.com (a wildcard family)" in text
    )
    assert "#   nonexistent-service.apple.com: did not resolve (NXDOMAIN)" in text
    assert "host: p23-caldav" not in text and "host: gs.apple.com" not in text  # in the catalog
    assert "akamaiedge" not in text  # a chain's hop: checked through the name asked


def test_kinds_by_port_couriers_and_names_not_written(tmp_path):
    tally = Tally()
    seen = {
        "3-courier.sandbox.push.apple.com": ("17.188.166.10", 5223),
        "9-courier.sandbox.push.apple.com": ("17.188.166.11", 443),
        "weather-map.apple.com": ("17.253.1.1", 80),
        "cdn.apple-livephotoskit.com": ("17.253.1.2", 8443),
        "sp.analytics.itunes.apple.com": ("17.253.1.3", 0),
        "_dns.resolver.apple.com": ("", 0),
        "metrics.mzstatic.com": ("0.0.0.0", 0),
    }
    for name, (address, port) in seen.items():
        tally.query(name, "A", "10.0.0.9", T0, "lab.pcap")
        if address:
            tally.answer([name], [address], "10.0.0.9", T0, "lab.pcap")
        if port:
            tally.connection(address, port)
    path = tmp_path / "t.yaml"
    targets.write(str(path), assess(tally))
    loaded = load(path)
    assert set(loaded) == {
        ("courier.sandbox.push.apple.com", 53, "dns"),
        ("courier.sandbox.push.apple.com", 5223, "courier"),
        ("courier.sandbox.push.apple.com", 443, "courier"),
        ("weather-map.apple.com", 53, "dns"),
        ("weather-map.apple.com", 80, "http"),
        ("cdn.apple-livephotoskit.com", 53, "dns"),
        ("cdn.apple-livephotoskit.com", 8443, "tcp"),
        ("sp.analytics.itunes.apple.com", 53, "dns"),
        ("sp.analytics.itunes.apple.com", 443, "tls"),  # no port seen: dns + tls on 443
        ("metrics.mzstatic.com", 53, "dns"),  # blocked (0.0.0.0): watched until allowed
        ("metrics.mzstatic.com", 443, "tls"),
    }
    text = path.read_text()
    assert "#   _dns.resolver.apple.com: not a host name (a service label)" in text
    courier = loaded["courier.sandbox.push.apple.com", 5223, "courier"]
    assert courier.numbers == (3, 9)  # dials the numbered names seen, not the catalog's 1..50
    assert loaded["courier.sandbox.push.apple.com", 53, "dns"].numbers == (3, 9)


def test_nothing_outside_the_catalog_is_an_empty_list(tmp_path):
    tally = Tally()
    tally.query("gs.apple.com", "A", "10.0.0.9", T0, "x")
    path = tmp_path / "t.yaml"
    assert targets.write(str(path), assess(tally)) == 0
    assert "targets: []" in path.read_text()
    assert load(path) == {}
