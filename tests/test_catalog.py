"""The built-in Apple catalog: its shape, the push rules, group selection and overrides."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from courierwatch.probe import catalog
from courierwatch.probe.targets import Target

APPLE_ROOT_SHA256 = (
    "B0:B1:73:0E:CB:C7:FF:45:05:14:2C:49:F1:29:5E:6E:"
    "DA:6B:CA:ED:7E:2C:68:C5:BE:91:B5:A1:10:01:F0:24"
)
CRITICAL = {"push", "push_provider", "device_setup", "device_management", "certificate_validation"}
RETIRED = {"gateway.push.apple.com", "gateway.sandbox.push.apple.com", "feedback.push.apple.com"}


def by_key(targets: list[Target]) -> dict[tuple[str, int, str], Target]:
    return {target.key: target for target in targets}


def test_every_group_loads_with_its_defaults() -> None:
    groups = catalog.groups()
    assert list(groups)[:2] == ["push", "push_provider"]
    assert CRITICAL | {"software_updates", "apple_account", "icloud"} <= set(groups)
    assert {g.id for g in groups.values() if g.critical} == CRITICAL
    assert (groups["push"].interval, groups["push"].timeout) == (30, 5)
    assert (groups["device_management"].interval, groups["device_management"].timeout) == (60, 10)
    assert groups["software_updates"].interval == 300
    for group in groups.values():
        assert group.title
        targets = catalog.targets([group.id])
        assert targets, group.id
        assert {(t.group, t.interval, t.timeout) for t in targets} == {
            (group.id, group.interval, group.timeout)
        }


def test_push_couriers_are_logical_courier_checks_on_5223_and_443() -> None:
    targets = by_key(catalog.targets(["push"]))
    for port in (5223, 443):
        courier = targets[("courier.push.apple.com", port, "courier")]
        # Dialled as N-courier.push.apple.com, verified as the logical name, as devices do.
        assert courier.server_name == "courier.push.apple.com"
        assert courier.numbers == tuple(range(1, 51))
        assert courier.alpn == ("apns-security-v3",)
        assert (courier.addresses, courier.expect_issuer) == ("apple", ("Apple",))
        (anchor,) = courier.anchors
        assert Path(anchor).is_absolute()
        assert anchor == catalog.anchor_path("apple-root-ca.pem")
        cert = x509.load_pem_x509_certificate(Path(anchor).read_bytes())
        assert cert.fingerprint(hashes.SHA256()).hex(":").upper() == APPLE_ROOT_SHA256
    # Its dns series rotates through the numbered names too (the bare name does not resolve).
    assert targets[("courier.push.apple.com", catalog.DNS_PORT, "dns")].numbers == tuple(
        range(1, 51)
    )
    assert not any(t.host.endswith("-courier.push.apple.com") for t in targets.values())


def test_apple_facts_and_overrides() -> None:
    facts = catalog.apple()
    assert [str(net) for net in facts.ranges][:1] == ["17.0.0.0/8"]
    assert any(net.version == 6 for net in facts.ranges)
    match = facts.pop_pattern.fullmatch("apac-asia-courier-4.push-apple.com.akadns.net")
    assert match and match["pop"] == "apac-asia"
    owned = {t.group for t in catalog.targets() if t.addresses == "apple"}
    assert owned == {"push", "push_provider"}
    assert {t.addresses for t in catalog.targets() if t.group not in owned} == {"public"}
    custom = catalog.targets(
        ["push", "device_setup"], courier_numbers=(1, 2), apple_groups=["device_setup"]
    )
    assert {t.numbers for t in custom if t.host == "courier.push.apple.com"} == {(1, 2)}
    assert {t.group for t in custom if t.addresses == "apple"} == {"device_setup"}


def test_anchor_path_only_serves_bundled_pems() -> None:
    for name in ("missing.pem", "../catalog/apple-root-ca.pem", "apple.yaml"):
        with pytest.raises(FileNotFoundError):
            catalog.anchor_path(name)


def test_no_wildcards_ranges_or_retired_provider_api() -> None:
    for target in catalog.targets():
        assert "*" not in target.host and "/" not in target.host
        assert target.port not in (2195, 2196)
        assert target.host not in RETIRED


def test_provider_api_on_443_and_2197_must_negotiate_h2() -> None:
    targets = by_key(catalog.targets(["push_provider"]))
    for host in ("api.push.apple.com", "api.sandbox.push.apple.com"):
        for port in (443, 2197):
            target = targets[(host, port, "tls")]
            assert (target.alpn, target.require_alpn) == (("h2", "http/1.1"), "h2")
            assert "USERTrust" in target.expect_issuer


def test_overrides_apply_per_group_and_none_keeps_default() -> None:
    targets = catalog.targets(
        ["push", "device_setup"], {"push": (10, None), "device_setup": (None, 3)}
    )
    assert {(t.group, t.interval, t.timeout) for t in targets} == {
        ("push", 10, 5),
        ("device_setup", 60, 3),
    }
    assert catalog.targets("push")[0].interval == 30  # the cached catalog was not changed
    with pytest.raises(ValueError, match="interval"):
        catalog.targets(["push"], {"push": (0, None)})


def test_unknown_group_raises_with_valid_ids() -> None:
    with pytest.raises(KeyError, match=r"'nope'.*valid groups: push, push_provider, "):
        catalog.targets(["push", "nope"])
    with pytest.raises(KeyError, match="'nope'"):
        catalog.targets(settings={"nope": (1, 1)})


def test_keys_unique_first_group_wins_order_stable() -> None:
    everything = catalog.targets()
    assert len(by_key(everything)) == len(everything)
    assert everything == catalog.targets()
    # gdmf is in device_management and software_updates: the earlier group in the file owns it.
    for chosen in (None, ["software_updates", "device_management"]):
        gdmf = by_key(catalog.targets(chosen))[("gdmf.apple.com", 443, "http")]
        assert gdmf.group == "device_management"
    alone = by_key(catalog.targets(["software_updates"]))[("gdmf.apple.com", 443, "http")]
    assert alone.group == "software_updates"


def test_every_host_has_a_dns_target() -> None:
    targets = catalog.targets()
    assert {t.host for t in targets} == {t.host for t in targets if t.check == "dns"}
    assert {t.check for t in targets} == {"dns", "tcp", "tls", "http", "courier", "ntp"}
    # NTP is a real SNTP query, beside the name.
    assert [t.key for t in targets if t.host == "time.apple.com"] == [
        ("time.apple.com", catalog.DNS_PORT, "dns"),
        ("time.apple.com", 123, "ntp"),
    ]


def raw_catalog() -> dict[str, Any]:
    path = Path(catalog.__file__).with_name("apple.yaml")
    return copy.deepcopy(yaml.safe_load(path.read_text(encoding="utf-8")))


def _endpoint(data: dict[str, Any]) -> dict[str, Any]:
    return data["groups"][0]["endpoints"][0]


# Read the way a config file is (courierwatch.common.configfile): each error names the file, the
# line and the field, and the line is where that field (or its mapping, when missing) is written.
@pytest.mark.parametrize(
    ("breakage", "field", "message", "on_line"),
    [
        (lambda d: d["groups"][0].pop("timeout"), "groups[0].timeout", "is required", "id: push"),
        (lambda d: d["groups"].append(d["groups"][0]), f"groups[{len(raw_catalog()['groups'])}].id",
         "duplicate group id 'push'", "id: push"),
        (lambda d: _endpoint(d).update(host="*.push.apple.com"), "groups[0].endpoints[0].host",
         "wildcards", "*.push.apple.com"),
        (lambda d: _endpoint(d).update(ports=["5223"]), "groups[0].endpoints[0].ports[0]",
         "must be an integer from 1 to 65535, got '5223'", "'5223'"),
        (lambda d: _endpoint(d).update(check="udp"), "groups[0].endpoints[0].check",
         "unknown check kind 'udp'", "check: udp"),
        (lambda d: _endpoint(d).update(numbers="1-3"), "groups[0].endpoints[0]",
         "unknown key 'numbers'", "numbers: 1-3"),
        (lambda d: d["apple"].update(pop_pattern="(no-group)"), "apple.pop_pattern",
         "needs a named group", "pop_pattern"),
        (lambda d: d["apple"].update(ranges=["17/8x"]), "apple.ranges[0]",
         "'17/8x' is not an address", "17/8x"),
        (lambda d: d["groups"][0].update(addresses="mine"), "groups[0].addresses",
         "unknown address policy 'mine'", "addresses: mine"),
        (lambda d: d["groups"][1]["endpoints"][0].update(require_alpn="h3"),
         "groups[1].endpoints[0].require_alpn", "must be one of alpn (h2, http/1.1)",
         "require_alpn: h3"),
        (lambda d: _endpoint(d).update(anchors=["gone.pem"]), "groups[0].endpoints[0].anchors[0]",
         "no bundled trust anchor", "gone.pem"),
        (lambda d: _endpoint(d).update(proto="tls"), "groups[0].endpoints[0]",
         "unknown key 'proto'", "proto: tls"),
        (lambda d: _endpoint(d).pop("check"), "groups[0].endpoints[0].alpn",
         "not valid without a check", "alpn:"),
        # http offers only HTTP/1.1 whatever alpn says: an option it would ignore is refused.
        (lambda d: d["groups"][0]["endpoints"][1].update(alpn=["h2"]),
         "groups[0].endpoints[1].alpn", "not valid for a http check", "alpn:"),
    ],
)  # fmt: skip
def test_broken_catalog_names_file_line_and_field(
    tmp_path: Path,
    breakage: Callable[[dict[str, Any]], object],
    field: str,
    message: str,
    on_line: str,
) -> None:
    data = raw_catalog()
    breakage(data)
    path = tmp_path / "apple.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(catalog.CatalogError) as info:
        catalog._load(path)
    error = info.value
    assert (error.path, error.field) == (str(path), field), error
    assert message in error.message, error
    assert str(error).startswith(f"{path}:{error.line}: {error.field}: "), error
    assert on_line in path.read_text(encoding="utf-8").splitlines()[error.line - 1], error


def test_courier_endpoint_may_require_its_alpn(tmp_path: Path) -> None:
    # tls.handshake checks require_alpn for a courier as for tls, so the catalog takes it too.
    data = raw_catalog()
    _endpoint(data)["require_alpn"] = "apns-security-v3"
    path = tmp_path / "apple.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    loaded = catalog._load(path)
    (courier, *_) = loaded.entries[0].endpoints
    assert [port.options["require_alpn"] for port in courier.ports] == ["apns-security-v3"] * 2
