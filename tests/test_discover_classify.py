"""Which names are Apple's: the catalog, Apple's own domains, and names reached through their
CNAME chains; everything else is counted and left out."""

from courierwatch.discover import classify
from courierwatch.discover.tally import Tally
from courierwatch.probe import catalog

T0 = 1_764_576_000.0


def test_every_catalog_host_in_an_apple_domain_is_covered_by_the_suffixes():
    hosts = {target.host for target in catalog.targets()}
    apple_looking = {h for h in hosts if "apple" in ".".join(h.split(".")[-2:]) or "icloud" in h}
    assert apple_looking, "the catalog has Apple hosts"
    assert sorted(h for h in apple_looking if not classify.apple_owned(h)) == []
    assert not classify.apple_owned("ocsp.digicert.com")  # a third party: by exact name only
    assert classify.catalog_hosts()["ocsp.digicert.com"] == "certificate_validation"
    assert classify.catalog_hosts()["23-courier.push.apple.com"] == "push"  # numbered names
    assert not classify.apple_owned("notapple.com") and not classify.apple_owned("apple.com.evil")


def test_sections_and_chains():
    tally = Tally()
    tally.query("gs.apple.com", "A", "10.0.0.1", T0, "x")
    tally.answer(["gs.apple.com", "gs-loc.apple.com.akadns.net", "e1.a.akamaiedge.net"],
                 ["23.1.2.3"], "10.0.0.1", T0, "x")  # fmt: skip
    tally.query("maps.apple.com", "A", "10.0.0.2", T0, "x")
    tally.query("ads.example.net", "A", "10.0.0.2", T0, "x")
    tally.answer(["ads.example.net", "e1.a.akamaiedge.net"], ["23.1.2.3"], "10.0.0.2", T0, "x")
    tally.query("xp.apple.com", "A", "10.0.0.3", T0, "x")
    tally.block("xp.apple.com", "gravity", "10.0.0.3", T0)
    found = classify.assess(tally)
    sections = {e.name: (e.section, e.apple, e.group, e.via) for e in found.entries}
    assert sections == {
        "xp.apple.com": ("blocked", "catalog", "software_updates", ""),
        "maps.apple.com": ("outside", "apple domain", "", ""),
        "gs.apple.com": ("catalog", "catalog", "device_setup", ""),
        "gs-loc.apple.com.akadns.net": ("chained", "apple domain", "", "gs.apple.com"),
        "e1.a.akamaiedge.net": ("chained", "cname", "", "gs.apple.com"),
    }
    assert found.names == 6  # ads.example.net is counted, not reported
    cdn = next(e for e in found.entries if e.name == "e1.a.akamaiedge.net")
    assert [(a.address, a.apple) for a in cdn.answers] == [("23.1.2.3", False)]
    assert [e.section for e in found.entries] == ["blocked", "outside", "catalog", "chained",
                                                  "chained"]  # fmt: skip
