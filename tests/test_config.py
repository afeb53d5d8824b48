"""Config files: typed values on success, one exact `file:line: field: message` line on error."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
import textwrap
from pathlib import Path

import pytest
import trustme
import yaml

from courierwatch.collector.config import CollectorConfig, load_collector_config
from courierwatch.common.configfile import (
    BUILTIN,
    ConfigError,
    TransportConfig,
    read_yaml,
    to_duration,
)
from courierwatch.probe import catalog, families
from courierwatch.probe.config import ProbeConfig, load_probe_config
from courierwatch.probe.net.proxy import ProxySettings
from courierwatch.probe.targets import expand

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def write(tmp_path: Path, text: str, name: str = "probe.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


def probe_error(path: str | None, *, require_identity: bool = False) -> str:
    with pytest.raises(ConfigError) as info:
        load_probe_config(path, require_identity=require_identity)
    return str(info.value)


def pems(tmp_path: Path) -> dict[str, str]:
    """Real mTLS material (the config layer parses it): a CA, a certificate and its key."""
    ca = trustme.CA()
    leaf = ca.issue_cert("probe.example")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    leaf.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    leaf.private_key_pem.write_to_path(tmp_path / "key.pem")
    return {name: str(tmp_path / f"{name}.pem") for name in ("ca", "cert", "key")}


# --- errors: one per kind, each the exact line ---


def test_yaml_syntax_error_has_the_line_of_the_yaml_mark(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        site: ams
        schedule:
          concurrency: 4
         jitter: 0.1
        """,
    )
    assert probe_error(path) == (
        f"{path}:4: invalid YAML: while parsing a block mapping, expected <block end>, "
        "but found '<block mapping start>'"
    )
    path = write(tmp_path, "site: ams\n  probe_id: pi\n")
    assert probe_error(path) == f"{path}:2: invalid YAML: mapping values are not allowed here"


def test_unknown_key_suggests_the_close_match(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        site: ams
        schedule:
          concurency: 4
        """,
    )
    assert probe_error(path) == (
        f"{path}:3: schedule: unknown key 'concurency' (did you mean 'concurrency'?)"
    )


def test_unknown_key_in_a_target_suggests_interval(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        targets:
          - host: example.com
            port: 443
            check: tcp
            intervall: 30s
        """,
    )
    assert probe_error(path) == (
        f"{path}:5: targets[0]: unknown key 'intervall' (did you mean 'interval'?)"
    )


def test_wrong_type_names_the_item_and_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        targets:
          - {host: a.example, port: 1, check: tcp}
          - {host: b.example, port: 2, check: tcp}
          - {host: c.example, port: 3, check: tcp}
          - host: d.example
            port: abc
            check: tcp
        """,
    )
    assert probe_error(path) == (
        f"{path}:6: targets[3].port: must be an integer from 1 to 65535, got 'abc'"
    )


def test_bool_is_not_an_integer(tmp_path: Path) -> None:
    path = write(tmp_path, "schedule: {concurrency: true}\n")
    assert probe_error(path) == (
        f"{path}:1: schedule.concurrency: must be an integer from 1 to 10000, got true"
    )


def test_out_of_range(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        schedule:
          concurrency: 8
          jitter: 0.7
        """,
    )
    assert (
        probe_error(path) == f"{path}:3: schedule.jitter: must be a number from 0 to 0.5, got 0.7"
    )


def test_the_tick_is_auto_or_a_short_duration(tmp_path: Path) -> None:
    for written, tick in (("auto", None), ("0", 0.0), ("1s", 1.0)):
        path = write(tmp_path, f"schedule: {{tick: {written}}}\n")
        assert load_probe_config(path, require_identity=False).tick == tick
    path = write(tmp_path, "schedule: {tick: 10s}\n")
    assert probe_error(path) == (
        f"{path}:1: schedule.tick: must be \"auto\" or a duration from 0ms to 5s (a number "
        "means seconds; units ms, s, m, h, d), got '10s'"
    )


def test_missing_required_names_the_parent_mappings_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        targets:
          - host: a.example
            port: 443
            check: tcp
          - port: 443
            check: tcp
        """,
    )
    assert probe_error(path) == f"{path}:5: targets[1].host: is required"


def test_the_probe_daemon_requires_site_collectors_and_transport(tmp_path: Path) -> None:
    assert probe_error(None, require_identity=True) == f"{BUILTIN}: site: is required"
    path = write(tmp_path, "# just a comment\nsite: ams\n")
    assert probe_error(path, require_identity=True) == (
        f"{path}:2: collectors: at least one collector host:port is required"
    )
    path = write(tmp_path, "site: ams\ncollectors: ['c.example:9475']\n")
    assert probe_error(path, require_identity=True) == (
        f"{path}:1: transport.ca: mTLS material is required unless transport.insecure is true"
    )


def test_bad_duration(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        targets:
          - host: a.example
            port: 443
            check: tcp
            interval: 30x
        """,
    )
    assert probe_error(path) == (
        f"{path}:5: targets[0].interval: must be a duration from 1s to 1d (a number means "
        "seconds; units ms, s, m, h, d), got '30x'"
    )


def test_timeout_longer_than_interval(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        targets:
          - {host: a.example, port: 443, check: tcp, interval: 5s, timeout: 6s}
        """,
    )
    assert probe_error(path) == (
        f"{path}:2: targets[0].timeout: must be shorter than the interval (5s), got 6s"
    )


def test_unknown_check_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "targets:\n  - {host: a.example, port: 443, check: tpc}\n")
    assert probe_error(path) == (
        f"{path}:2: targets[0].check: unknown check kind 'tpc' "
        "(did you mean 'tcp'? valid: courier, dns, dns_clients, http, ntp, tcp, tls)"
    )


def test_option_not_valid_for_the_kind(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        targets:
          - host: a.example
            port: 443
            check: tcp
            path: /health
        """,
    )
    assert probe_error(path) == f"{path}:5: targets[0].path: not valid for a tcp check"


def test_tls_options_not_valid_for_plain_http(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        targets:
          - {host: a.example, port: 80, check: http, sni: b.example}
        """,
    )
    assert probe_error(path) == (
        f"{path}:2: targets[0].sni: not valid for plain HTTP (tls: false, or port 80)"
    )


def test_duplicate_target_names_the_second_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        targets:
          - {host: a.example, port: 443, check: tls}
          - {host: b.example, port: 443, check: tls}
          - host: a.example
            port: 443
            check: tls
            interval: 2m
        """,
    )
    assert probe_error(path) == (
        f"{path}:4: targets[2]: duplicate target a.example:443 tls (also targets[0], line 2)"
    )


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    path = write(tmp_path, "resolver:\n  port: 53\n  port: 5353\n")
    assert probe_error(path) == f"{path}:3: resolver: duplicate key 'port'"


def test_missing_anchor_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        trust:
          anchors:
            - extra.pem
        """,
    )
    missing = tmp_path / "extra.pem"  # relative paths are taken from the config's directory
    assert probe_error(path) == (
        f"{path}:3: trust.anchors[0]: cannot read '{missing}': No such file or directory"
    )


def test_missing_transport_file(tmp_path: Path) -> None:
    files = pems(tmp_path)
    path = write(
        tmp_path,
        f"""
        transport:
          ca: {files["ca"]}
          cert: {tmp_path}/nope.pem
          key: {files["key"]}
        """,
        name="collector.yaml",
    )
    with pytest.raises(ConfigError) as info:
        load_collector_config(path)
    assert str(info.value) == (
        f"{path}:3: transport.cert: cannot read '{tmp_path}/nope.pem': No such file or directory"
    )
    assert (info.value.path, info.value.line, info.value.field) == (path, 3, "transport.cert")


def test_unknown_catalog_group_lists_the_valid_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "catalog:\n  groups: [push, pushh]\n")
    valid = ", ".join(sorted(catalog.groups()))
    assert probe_error(path) == (
        f"{path}:2: catalog.groups[1]: unknown catalog group 'pushh' "
        f"(did you mean 'push'? valid: {valid})"
    )


def test_catalog_override_that_crosses_the_catalog_timeout(tmp_path: Path) -> None:
    push = catalog.groups()["push"]
    short = push.timeout / 2
    path = write(tmp_path, f"catalog:\n  settings:\n    push: {{interval: {short}}}\n")
    assert probe_error(path) == (
        f"{path}:3: catalog.settings.push: timeout ({push.timeout:g}s) must be shorter than "
        f"the interval ({short:g}s)"
    )


def test_bad_host_port(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        site: ams
        collectors:
          - collector.example:9475
          - "::1:9475"
        """,
    )
    assert probe_error(path) == (
        f"{path}:4: collectors[1]: must be host:port with a port from 1 to 65535 "
        "(IPv6 as [address]:port), got '::1:9475'"
    )


def test_bad_listen_port(tmp_path: Path) -> None:
    path = write(tmp_path, "listen:\n  http: 'localhost:99999'\n", name="collector.yaml")
    with pytest.raises(ConfigError) as info:
        load_collector_config(path)
    assert str(info.value) == (
        f"{path}:2: listen.http: must be host:port with a port from 0 to 65535 "
        "(IPv6 as [address]:port), got 'localhost:99999'"
    )


def test_missing_config_file_has_no_line(tmp_path: Path) -> None:
    path = str(tmp_path / "probe.yaml")
    assert probe_error(path) == f"{path}: cannot read: No such file or directory"


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- site: ams\n")
    assert probe_error(path) == f"{path}:1: the top level must be a mapping, got a list"


def test_collector_without_a_file_needs_mtls_material() -> None:
    with pytest.raises(ConfigError) as info:
        load_collector_config(None)
    assert str(info.value) == (
        f"{BUILTIN}: transport.ca: mTLS material is required unless transport.insecure is true"
    )


def test_config_error_pickles() -> None:
    error = ConfigError("probe.yaml", 12, "targets[3].port", "must be an integer")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    assert str(ConfigError("p.yaml", 0, "", "cannot read: Is a directory")) == (
        "p.yaml: cannot read: Is a directory"
    )


# --- happy paths ---


def v4_only() -> bool:
    return False


def test_defaults_only_config_has_every_catalog_target() -> None:
    config = load_probe_config(None, require_identity=False, host_has_ipv6=v4_only)
    assert config.source == BUILTIN
    assert config.site == "local"
    assert config.digest == EMPTY_SHA256
    assert config.families == ("ipv4",)
    assert config.targets == expand(catalog.targets(), ("ipv4",), proxy=False)
    assert config.targets  # the catalog is not empty
    assert (config.concurrency, config.jitter, config.trust_system) == (32, 0.1, True)
    assert config.tick is None  # automatic
    assert (config.proxy, config.trust_site) == (None, ())
    assert config.apple_ranges == catalog.apple().ranges


def test_custom_target_replaces_the_catalog_one_in_place(tmp_path: Path) -> None:
    bag = next(t for t in catalog.targets(["push"]) if t.check == "http")
    path = write(
        tmp_path,
        f"""
        catalog:
          groups: [push]
        targets:
          - host: {bag.host}
            port: {bag.port}
            check: http
            path: /bag
            interval: 10s
          - {{host: 192.0.2.1, port: 22, check: tcp, group: lab}}
        """,
    )
    config = load_probe_config(path, require_identity=False, host_has_ipv6=v4_only)
    keys = list(dict.fromkeys(t.key for t in config.targets))
    assert keys == [t.key for t in catalog.targets(["push"])] + [("192.0.2.1", 22, "tcp")]
    ours = [t for t in config.targets if t.key == bag.key]
    assert [(t.group, t.interval, t.timeout, t.family, t.addresses) for t in ours] == [
        ("custom", 10.0, 5.0, "ipv4", "any")  # the timeout: 10s, or half the interval
    ]
    assert config.targets[-1].group == "lab"


def test_empty_group_list_means_only_own_targets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        catalog: {groups: []}
        targets:
          - {host: time.example, check: dns}
        """,
    )
    config = load_probe_config(path, require_identity=False)
    assert [t.key for t in config.targets] == [("time.example", 53, "dns")]


def test_full_probe_config(tmp_path: Path) -> None:
    files = pems(tmp_path)
    path = write(
        tmp_path,
        f"""
        site: ams-office
        probe_id: pi-ams-1
        collectors: ["collector.noc.example:9475", "[::1]:9475"]
        transport: {{ca: ca.pem, cert: {files["cert"]}, key: key.pem}}
        resolver:
          nameservers: [127.0.0.1, "2001:db8::0001"]
          port: 5353
        trust:
          anchors: [ca.pem]
          system: false
        schedule: {{concurrency: 4, jitter: 0, tick: 250ms}}
        catalog:
          groups: [push]
          settings:
            push: {{interval: 15s, timeout: 5s}}
        targets:
          - host: www.example
            port: 8443
            check: http
            tls: true
            path: /health
            expect_status: [200, 204]
            anchors: [ca.pem]
        """,
    )
    config = load_probe_config(path)
    assert config.source == path
    assert (config.site, config.probe_id) == ("ams-office", "pi-ams-1")
    assert config.collectors == ("collector.noc.example:9475", "[::1]:9475")
    assert config.transport == TransportConfig(False, files["ca"], files["cert"], files["key"])
    assert (config.nameservers, config.resolver_port) == (("127.0.0.1", "2001:db8::1"), 5353)
    assert (config.trust_anchors, config.trust_system) == ((files["ca"],), False)
    assert (config.concurrency, config.jitter, config.tick) == (4, 0.0, 0.25)
    assert config.digest == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    catalog_part = [t for t in config.targets if t.group == "push"]
    assert catalog_part and all((t.interval, t.timeout) == (15.0, 5.0) for t in catalog_part)
    web = config.targets[-1]
    assert (web.tls, web.path, web.expect_status, web.anchors) == (
        True,
        "/health",
        (200, 204),
        (files["ca"],),
    )


def test_probe_id_defaults_to_a_label_safe_host_name() -> None:
    probe_id = load_probe_config(None, require_identity=False).probe_id
    assert probe_id and len(probe_id) <= 64
    assert set(probe_id) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(30, 30.0), (0.5, 0.5), ("30s", 30.0), ("2m", 120.0), ("1h", 3600.0), ("500ms", 0.5),
     ("1h30m", 5400.0), ("1.5s", 1.5), ("7d", 604800.0)],
)  # fmt: skip
def test_durations_parse(raw: object, seconds: float) -> None:
    assert to_duration(raw) == seconds


@pytest.mark.parametrize("raw", [0, -1, "0s", "30", "s", "1 hour", True, float("inf")])
def test_durations_rejected(raw: object) -> None:
    with pytest.raises(ValueError, match="must be a duration"):
        to_duration(raw)


def test_collector_config(tmp_path: Path) -> None:
    files = pems(tmp_path)
    path = write(
        tmp_path,
        f"""
        listen:
          grpc: "[::]:0"
          http: 127.0.0.1:9474
        transport:
          ca: {files["ca"]}
          cert: {files["cert"]}
          key: {files["key"]}
        series:
          stale_intervals: 2
          min_stale: 90s
          forget_after: 12h
        """,
        name="collector.yaml",
    )
    assert load_collector_config(path) == CollectorConfig(
        source=path,
        grpc_listen="[::]:0",
        http_listen="127.0.0.1:9474",
        transport=TransportConfig(False, files["ca"], files["cert"], files["key"]),
        stale_intervals=2.0,
        min_stale=90.0,
        forget_after=43200.0,
    )


def test_insecure_transport_needs_no_files(tmp_path: Path) -> None:
    path = write(tmp_path, "transport: {insecure: true}\n", name="collector.yaml")
    config = load_collector_config(path)
    assert config.transport == TransportConfig(insecure=True)
    assert (config.grpc_listen, config.http_listen) == ("0.0.0.0:9475", "0.0.0.0:9474")
    assert CollectorConfig().stale_intervals == 3.0  # constructible without a file
    assert ProbeConfig().digest == EMPTY_SHA256


def test_read_yaml_remembers_lines_and_digest(tmp_path: Path) -> None:
    path = write(tmp_path, "# comment\n\nouter:\n  inner: [1, 2]\n")
    doc = read_yaml(path)
    assert doc.digest == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    outer = doc.root.section("outer")
    assert (doc.root.line_of("outer"), outer.line_of("inner")) == (3, 4)
    assert outer.list_of("inner", int) == (1, 2)
    assert read_yaml(None).digest == EMPTY_SHA256


# --- spool ---


def test_spool_defaults_follow_systemd_state_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/courierwatch:/var/lib/other")
    config = load_probe_config(None, require_identity=False)
    assert config.spool_path == f"/var/lib/courierwatch/spool-{config.probe_id}.sqlite"
    assert (config.spool_max_bytes, config.spool_max_age) == (256 * 1024 * 1024, 48 * 3600.0)
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("HOME", "/home/pi")
    assert load_probe_config(None, require_identity=False).spool_path == (
        f"/home/pi/.local/state/courierwatch/spool-{config.probe_id}.sqlite"
    )


def test_spool_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "spool: {path: state/q.sqlite, max_mb: 8, max_age: 90m}\n")
    config = load_probe_config(path, require_identity=False)
    assert config.spool_path == str(tmp_path / "state" / "q.sqlite")  # need not exist yet
    assert (config.spool_max_bytes, config.spool_max_age) == (8 * 1024 * 1024, 5400.0)


@pytest.mark.parametrize(
    ("spool", "message"),
    [
        ("{max_mb: 0}", "spool.max_mb: must be an integer from 1 to 65536, got 0"),
        ("{max_mb: 1.5}", "spool.max_mb: must be an integer from 1 to 65536, got 1.5"),
        (
            "{max_age: 2 days}",
            "spool.max_age: must be a duration from 1m to 365d (a number means seconds; "
            "units ms, s, m, h, d), got '2 days'",
        ),
        ("{path: ''}", "spool.path: must be a file path, got ''"),
        ("{max_size: 9}", "spool: unknown key 'max_size' (did you mean 'max_age'?)"),
    ],
)
def test_spool_errors(tmp_path: Path, spool: str, message: str) -> None:
    path = write(tmp_path, f"spool: {spool}\n")
    assert probe_error(path) == f"{path}:1: {message}"


def test_spool_path_must_not_be_a_directory(tmp_path: Path) -> None:
    path = write(tmp_path, "spool:\n  path: .\n")
    assert probe_error(path) == (
        f"{path}:2: spool.path: '{tmp_path}' is a directory; name a file in it"
    )


# --- Apple facts, proxy, families, site anchors, courier and ntp targets ---


def test_apple_proxy_families_and_site_anchors(tmp_path: Path) -> None:
    files = pems(tmp_path)
    path = write(
        tmp_path,
        r"""
        trust: {site: [ca.pem]}
        apple:
          ranges: [17.0.0.0/8, 127.0.0.0/8]
          owned_groups: [push]
          courier_numbers: 1-3, 7
          pop_pattern: '(?P<pop>[a-z-]+)-edge-\d+\.example'
        proxy: {url: "http://proxy.example:3128"}
        families: [ipv4, ipv6]
        catalog: {groups: [push, push_provider]}
        targets:
          - {host: courier.lab.example, port: 5223, check: courier, expect_issuer: [Lab]}
          - {host: time.lab.example, check: ntp}
          - {host: api.lab.example, port: 443, check: tls, require_alpn: h2, addresses: apple}
        """,
    )
    config = load_probe_config(path, require_identity=False)
    assert config.trust_site == (files["ca"],)
    assert [str(net) for net in config.apple_ranges] == ["17.0.0.0/8", "127.0.0.0/8"]
    assert config.pop_pattern.fullmatch("us-ne-edge-4.example")["pop"] == "us-ne"
    assert config.proxy == ProxySettings("proxy.example", 3128)
    assert config.families == ("ipv4", "ipv6")
    by_group = {t.group: t.addresses for t in config.targets if t.group != "custom"}
    assert by_group == {"push": "apple", "push_provider": "public"}
    assert {t.numbers for t in config.targets if t.check == "courier"} == {(1, 2, 3, 7)}

    lab = [t for t in config.targets if t.host == "courier.lab.example"]
    assert [(t.family, t.via) for t in lab] == [
        ("ipv4", "direct"),
        ("ipv6", "direct"),
        ("", "proxy"),
    ]
    courier = lab[0]
    assert (courier.alpn, courier.anchors, courier.expect_issuer) == (
        (catalog.COURIER_ALPN,),
        (catalog.anchor_path(catalog.APPLE_ROOT),),
        ("Lab",),
    )
    ntp = [(t.port, t.family, t.via) for t in config.targets if t.check == "ntp"]
    assert ntp == [(123, "ipv4", "direct"), (123, "ipv6", "direct")]  # no UDP through CONNECT
    api = next(t for t in config.targets if t.host == "api.lab.example")
    assert (api.alpn, api.require_alpn, api.addresses) == (("h2",), "h2", "apple")
    assert all(t.family == "" and t.via == "direct" for t in config.targets if t.check == "dns")


def test_families_auto_follows_the_host() -> None:
    assert load_probe_config(None, require_identity=False, host_has_ipv6=lambda: True).families == (
        "ipv4",
        "ipv6",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apple: {ranges: [nope]}",
         "apple.ranges[0]: 'nope' is not an address range such as 17.0.0.0/8"),
        ("apple: {ranges: []}", "apple.ranges: must list at least one range"),
        ("apple: {owned_groups: [pushh]}", "apple.owned_groups[0]: unknown catalog group 'pushh'"),
        ("apple: {courier_numbers: 5-1}", "apple.courier_numbers: '5-1' runs backwards"),
        ("apple: {courier_numbers: 1-5000}",
         "apple.courier_numbers: '1-5000' is more than 1000 numbers"),
        ("apple: {pop_pattern: x}", "apple.pop_pattern: needs a named group (?P<pop>...)"),
        ("apple: {pop_pattern: '(?P<pop>'}", "apple.pop_pattern: not a regular expression"),
        ("proxy: {url: 'https://p:1'}",
         "proxy.url: must be an http:// proxy URL, got 'https://p:1'"),
        ("proxy: {url: 'http://me:pw@p:1'}",
         "proxy.url: apsd cannot use an authenticated proxy: leave credentials out"),
        ("proxy: {url: 'http://p'}", "proxy.url: must name the host and port"),
        ("proxy: {url: 3128}", "proxy.url: must be a string, got 3128"),
        ("families: [ipv4, ipv5]", "families[1]: unknown address family 'ipv5'"),
        ("families: yes", "families: must be auto or a list of ipv4 and ipv6, got true"),
        ("families: []", "families: must be auto or name at least one family"),
        ("targets: [{host: a.example, port: 443, check: tls, alpn: [h2], require_alpn: h3}]",
         "targets[0].require_alpn: must be one of alpn (h2)"),
        ("targets: [{host: a.example, port: 443, check: tcp, numbers: 1-3}]",
         "targets[0].numbers: not valid for a tcp check"),
        ("targets: [{host: a.example, check: dns, numbers: 3-1}]",
         "targets[0].numbers: '3-1' runs backwards"),
        ("targets: [{host: a.example, port: 443, check: tcp, addresses: mine}]",
         "targets[0].addresses: unknown address policy 'mine'"),
        ("targets: [{host: a.example, port: 80, check: http, expect_issuer: [Apple]}]",
         "targets[0].expect_issuer: not valid for plain HTTP (tls: false, or port 80)"),
        # http offers only HTTP/1.1, whatever alpn would say (as the catalog refuses it too).
        ("targets: [{host: a.example, port: 443, check: http, alpn: [h2]}]",
         "targets[0].alpn: not valid for a http check"),
    ],
)  # fmt: skip
def test_new_keys_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text + "\n")
    assert probe_error(path).startswith(f"{path}:1: {message}")


def test_courier_takes_require_alpn_as_the_catalog_does(tmp_path: Path) -> None:
    # tls.handshake checks require_alpn for a courier as for tls.
    path = write(
        tmp_path,
        """
        catalog: {groups: []}
        targets:
          - {host: c.example, port: 5223, check: courier, require_alpn: apns-security-v3}
          - {host: c.example, port: 443, check: courier, require_alpn: h2}
        """,
    )
    config = load_probe_config(path, require_identity=False, host_has_ipv6=v4_only)
    assert [(t.alpn, t.require_alpn) for t in config.targets] == [
        ((catalog.COURIER_ALPN,), catalog.COURIER_ALPN),
        (("h2",), "h2"),  # offering only what is required is the plain reading
    ]


@pytest.mark.parametrize(
    ("field", "breakage", "message"),
    [
        ("ca", lambda f: Path(f["ca"]).write_text("junk\n"), "'{ca}' is not a PEM certificate"),
        (
            "cert",
            lambda f: Path(f["cert"]).write_text("junk\n"),
            "'{cert}' is not a PEM certificate",
        ),
        ("key", lambda f: Path(f["key"]).write_text("junk\n"), "'{key}' is not an unencrypted PEM"),
        (
            "key",
            lambda f: Path(f["key"]).write_bytes(
                trustme.CA().issue_cert("other").private_key_pem.bytes()
            ),
            "this key does not belong to transport.cert",
        ),
    ],
)
def test_broken_mtls_material_is_a_config_error_naming_the_field(
    tmp_path: Path, field, breakage, message
) -> None:
    files = pems(tmp_path)
    breakage(files)
    path = write(
        tmp_path,
        f"""
        site: ams
        collectors: [c.example:9475]
        transport: {{ca: {files["ca"]}, cert: {files["cert"]}, key: {files["key"]}}}
        """,
    )
    error = probe_error(path, require_identity=True)
    assert error.startswith(f"{path}:3: transport.{field}: {message.format(**files)}"), error


# --- hostile input (issue 11, defect 8): each once a traceback, a hang or accepted ---


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("targets: [{host: a.example, port: 1, check: tcp, interval: 0.0001ms}]",
         "targets[0].interval: must be a duration from 1s to 1d (a number means seconds; "
         "units ms, s, m, h, d), got '0.0001ms'"),
        ("targets: [{host: a.example, port: 1, check: tcp, interval: 2d}]",
         "targets[0].interval: must be a duration from 1s to 1d"),
        ("targets: [{host: a.example, port: 1, check: tcp, timeout: 10ms}]",
         "targets[0].timeout: must be a duration from 100ms to 5m"),
        ("targets: [{host: a.example, port: 1, check: tcp, interval: 2s, timeout: 2s}]",
         "targets[0].timeout: must be shorter than the interval (2s), got 2s"),
        ("catalog: {settings: {push: {interval: 500ms}}}",
         "catalog.settings.push.interval: must be a duration from 1s to 1d"),
        ("catalog: {settings: {push: {interval: 1m, timeout: 1m}}}",
         "catalog.settings.push: timeout (1m) must be shorter than the interval (1m)"),
        ("spool: {max_age: 1s}", "spool.max_age: must be a duration from 1m to 365d"),
        ("schedule: {jitter: 1" + "0" * 400 + "}",
         "schedule.jitter: a number with more than 30 digits"),
        ("schedule: {jitter: 1" + "0" * 25 + "}",
         "schedule.jitter: must be a number from 0 to 0.5, got 10000000000000000000000000"),
    ],
)  # fmt: skip
def test_schedule_bounds(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text + "\n")
    assert probe_error(path).startswith(f"{path}:1: {message}")


def test_interval_and_timeout_floors_are_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "catalog: {groups: []}\n"
        "targets: [{host: a.example, port: 1, check: tcp, interval: 1s, timeout: 100ms},\n"
        "          {host: b.example, port: 1, check: tcp, interval: 3s}]\n",
    )
    config = load_probe_config(path, require_identity=False, host_has_ipv6=v4_only)
    assert [(t.interval, t.timeout) for t in config.targets] == [(1.0, 0.1), (3.0, 1.5)]


def test_collector_bounds(tmp_path: Path) -> None:
    for text, message in [
        ("series: {min_stale: 1ms}", "series.min_stale: must be a duration from 1s to 1d"),
        ("series: {forget_after: 99999d}", "series.forget_after: must be a duration from 1m"),
        ("series: {stale_intervals: 1" + "0" * 999 + "}",
         "series.stale_intervals: a number with more than 30 digits"),
        ("series: {stale_intervals: 1.0e+999}",
         "series.stale_intervals: must be a number from 1 to 1000, got inf"),
        (f"state_dir: {tmp_path / 'collector.yaml'}",
         f"state_dir: '{tmp_path / 'collector.yaml'}' is not a directory"),
    ]:  # fmt: skip
        path = write(tmp_path, f"transport: {{insecure: true}}\n{text}\n", name="collector.yaml")
        with pytest.raises(ConfigError) as info:
            load_collector_config(path)
        assert str(info.value).startswith(f"{path}:2: {message}"), str(info.value)


def test_a_file_that_is_not_pem_is_a_config_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a certificate\n")
    notes = tmp_path / "notes.txt"
    for text, field in [
        ("trust: {anchors: [notes.txt]}", "trust.anchors[0]"),
        ("trust: {site: [notes.txt]}", "trust.site[0]"),
        ("targets: [{host: a.example, port: 443, check: tls, anchors: [notes.txt]}]",
         "targets[0].anchors[0]"),
    ]:  # fmt: skip
        path = write(tmp_path, text + "\n")
        assert probe_error(path) == f"{path}:1: {field}: '{notes}' is not a PEM certificate"


def test_pem_anchors_are_kept(tmp_path: Path) -> None:
    files = pems(tmp_path)
    path = write(
        tmp_path,
        "trust: {anchors: [ca.pem], site: [cert.pem]}\n"
        "targets: [{host: a.example, port: 443, check: tls, anchors: [ca.pem]}]\n",
    )
    config = load_probe_config(path, require_identity=False, host_has_ipv6=v4_only)
    assert (config.trust_anchors, config.trust_site) == ((files["ca"],), (files["cert"],))
    assert config.targets[-1].anchors == (files["ca"],)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("/dev/zero", "not a regular file"),  # was read until memory ran out
        ("fifo", "not a regular file"),  # was a hang: opening a FIFO waits for a writer
        (".", "not a regular file"),
        ("/proc/self/mem", "Input/output error"),  # was a traceback
        ("big.pem", "larger than 1024 KiB"),
    ],
)
def test_files_are_regular_and_capped(tmp_path: Path, name: str, reason: str) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big.pem").write_bytes(b"#" * (1024 * 1024 + 1))
    files = pems(tmp_path)
    target = os.path.normpath(tmp_path / name)  # absolute names stay as they are
    path = write(tmp_path, f"trust: {{anchors: ['{name}']}}\n")
    assert probe_error(path) == f"{path}:1: trust.anchors[0]: cannot read '{target}': {reason}"
    transport = f"{{ca: {files['ca']}, cert: '{name}', key: {files['key']}}}"
    path = write(tmp_path, f"site: ams\ncollectors: [c.example:1]\ntransport: {transport}\n")
    assert probe_error(path, require_identity=True) == (
        f"{path}:3: transport.cert: cannot read '{target}': {reason}"
    )


def test_config_file_itself_must_be_a_regular_capped_file(tmp_path: Path) -> None:
    assert probe_error("/dev/zero") == "/dev/zero: cannot read: not a regular file"
    big = tmp_path / "probe.yaml"
    big.write_text("# padding\n" * 200_000)
    assert probe_error(str(big)) == f"{big}: cannot read: larger than 1024 KiB"


LAUGHS = "lol0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)
)
MERGE_BOMB = "base: &m0 {x: 1}\n" + "".join(
    f"m{i}: &m{i}\n  <<: [{', '.join([f'*m{i - 1}'] * 10)}]\n" for i in range(1, 9)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("site: !!timestamp 2024-01-01", "1: site: the YAML tag !!timestamp is not taken"),
        ("site: !!timestamp nope", "1: site: the YAML tag !!timestamp is not taken"),
        ("trust:\n  anchors: [!!binary aGVsbG8=]",
         "2: trust.anchors[0]: the YAML tag !!binary is not taken"),
        ("site: !!python/object/apply:os.system [ls]",
         "1: site: the YAML tag !!python/object/apply:os.system is not taken"),
        ("families: !!set {ipv4}", "1: families: the YAML tag !!set is not taken"),
        ("site: !local x", "1: site: the YAML tag !local is not taken"),
        (LAUGHS, "5: lol4[7]: more than 100000 values (YAML aliases count each time"),
        (MERGE_BOMB, "11: m5.<<[1]: more than 100000 values"),
        ("targets: &t [*t]", "1: targets[0]: a YAML alias inside the value it names"),
        ("targets: " + "[" * 200 + "]" * 200, "1: targets" + "[0]" * 31 + ": nested more than 32"),
        ("schedule: {concurrency: " + "9" * 5000 + "}",
         "1: schedule.concurrency: a number with more than 30 digits"),
    ],
)  # fmt: skip
def test_yaml_beyond_plain_values_is_refused_naming_line_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text + "\n")
    error = probe_error(path)
    assert error.startswith(f"{path}:{message}"), error
    assert "\n" not in error


def test_a_date_is_a_string_and_a_merge_key_still_works(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        site: 2024-01-01
        catalog:
          groups: [push, push_provider]
          settings:
            push: &every {interval: 30s, timeout: 5s}
            push_provider:
              <<: *every
              timeout: 4s
        """,
    )
    config = load_probe_config(path, require_identity=False, host_has_ipv6=v4_only)
    assert config.site == "2024-01-01"
    assert {(t.group, t.interval, t.timeout) for t in config.targets} == {
        ("push", 30.0, 5.0),
        ("push_provider", 30.0, 4.0),
    }


# --- catalog.exclude, families: auto's reason, the spool per probe (issue 10, item 10) ---


def test_catalog_exclude_leaves_out_hosts_of_one_group(tmp_path: Path) -> None:
    setup = {t.host for t in catalog.targets(["device_setup"])}
    assert {"humb.apple.com", "albert.apple.com"} <= setup
    path = write(
        tmp_path,
        """
        catalog:
          groups: [push, device_setup]
          exclude:
            device_setup: [humb.apple.com, albert.apple.com]
        """,
    )
    config = load_probe_config(path, require_identity=False, host_has_ipv6=v4_only)
    kept = {(t.group, t.host) for t in config.targets}
    assert kept == {("push", h) for h in {t.host for t in catalog.targets(["push"])}} | {
        ("device_setup", h) for h in setup - {"humb.apple.com", "albert.apple.com"}
    }


def test_catalog_exclude_in_one_group_keeps_the_host_of_another() -> None:
    # A (host, port, check) two groups list belongs to the earlier; excluded there, the later
    # group's target takes its place. Found from the catalog, so the test follows it.
    groups = list(catalog.groups())
    owners: dict[tuple[str, int, str], list[str]] = {}
    for group_id in groups:
        for target in catalog.targets([group_id]):
            owners.setdefault(target.key, []).append(group_id)
    key, (first, second, *_) = next((k, g) for k, g in owners.items() if len(g) > 1)
    config = load_probe_config(None, require_identity=False, host_has_ipv6=v4_only)
    assert next(t.group for t in config.targets if t.key == key) == first
    with_exclude = _load_text(yaml.safe_dump({"catalog": {"exclude": {first: [key[0]]}}}))
    assert next(t.group for t in with_exclude.targets if t.key == key) == second
    assert not any(t.group == first and t.host == key[0] for t in with_exclude.targets)


def test_every_group_at_once_is_what_the_catalog_gives() -> None:
    config = load_probe_config(None, require_identity=False, host_has_ipv6=v4_only)
    assert [t.key for t in config.targets] == [t.key for t in catalog.targets()]
    assert [t.group for t in config.targets] == [t.group for t in catalog.targets()]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("catalog: {groups: [push], exclude: {push: [init-p01st.push.apple.com, nope.apple.com]}}",
         "catalog.exclude.push[1]: unknown push host 'nope.apple.com' (did you mean"),
        ("catalog: {groups: [push], exclude: {icloud: [x.apple.com]}}",
         "catalog.exclude.icloud: catalog group icloud is not among catalog.groups"),
        ("catalog: {exclude: {pushh: [x.apple.com]}}",
         "catalog.exclude.pushh: unknown catalog group 'pushh' (did you mean 'push'?"),
        ("catalog: {exclude: {push: courier.push.apple.com}}",
         "catalog.exclude.push: must be a list, got 'courier.push.apple.com'"),
    ],
)  # fmt: skip
def test_catalog_exclude_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text + "\n")
    assert probe_error(path).startswith(f"{path}:1: {message}")


def test_families_auto_says_what_it_chose_and_why(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="courierwatch.probe.config")
    found = families.IPv6(True, "global address 2001:db8::5 on eth0 with a route")
    config = load_probe_config(None, require_identity=False, host_has_ipv6=lambda: found)
    assert config.families == ("ipv4", "ipv6")
    assert config.families_reason == "IPv6 too: global address 2001:db8::5 on eth0 with a route"
    assert caplog.messages == [f"families: auto: {config.families_reason}"]
    missing = families.IPv6(False, "no IPv6 default route")
    config = load_probe_config(None, require_identity=False, host_has_ipv6=lambda: missing)
    assert (config.families, config.families_reason) == (
        ("ipv4",),
        "IPv4 only: no IPv6 default route",
    )


def test_listed_families_say_configured(tmp_path: Path) -> None:
    path = write(tmp_path, "families: [ipv6, ipv4, ipv6]\n")
    config = load_probe_config(path, require_identity=False, host_has_ipv6=lambda: False)
    assert (config.families, config.families_reason) == (("ipv6", "ipv4"), "configured")
    assert ProbeConfig().families_reason == "configured"


def test_default_spool_path_names_the_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    paths = {_load_text(f"probe_id: pi-{n}\n").spool_path for n in (1, 2)}
    assert paths == {str(tmp_path / "spool-pi-1.sqlite"), str(tmp_path / "spool-pi-2.sqlite")}
    assert ProbeConfig(probe_id="pi-3").spool_path == str(tmp_path / "spool-pi-3.sqlite")


def test_an_old_default_spool_is_kept_until_the_new_one_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    (tmp_path / "spool.sqlite").write_bytes(b"results of the previous version")
    assert _load_text("probe_id: pi-1\n").spool_path == str(tmp_path / "spool.sqlite")
    assert any(
        "spool.sqlite" in m and "spool-pi-1.sqlite" in m and "undelivered" in m
        for m in caplog.messages
    )
    (tmp_path / "spool-pi-1.sqlite").write_bytes(b"")
    assert _load_text("probe_id: pi-1\n").spool_path == str(tmp_path / "spool-pi-1.sqlite")


def _load_text(text: str) -> ProbeConfig:
    """A probe config from YAML text, written beside pytest's other temporary files."""
    with tempfile.TemporaryDirectory() as where:
        path = Path(where) / "probe.yaml"
        path.write_text(text, encoding="utf-8")
        return load_probe_config(str(path), require_identity=False, host_has_ipv6=v4_only)
