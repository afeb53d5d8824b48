"""Config files: typed values on success, one exact `file:line: field: message` line on error."""

from __future__ import annotations

import hashlib
import pickle
import textwrap
from pathlib import Path

import pytest

from courierwatch.collector.config import CollectorConfig, load_collector_config
from courierwatch.configfile import BUILTIN, ConfigError, TransportConfig, read_yaml, to_duration
from courierwatch.probe import catalog
from courierwatch.probe.config import ProbeConfig, load_probe_config

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
    """Stand-in PEM files: the config layer only checks that they can be read."""
    out = {}
    for name in ("ca", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text("-----BEGIN TEST-----\n")
        out[name] = str(path)
    return out


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
        f"{path}:5: targets[0].interval: must be a duration > 0 such as 30s, 2m, 1h or 500ms "
        "(a number means seconds), got '30x'"
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
        f"{path}:2: targets[0].timeout: must not exceed the interval (5s), got 6s"
    )


def test_unknown_check_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "targets:\n  - {host: a.example, port: 443, check: tpc}\n")
    assert probe_error(path) == (
        f"{path}:2: targets[0].check: unknown check kind 'tpc' "
        "(did you mean 'tcp'? valid: dns, http, tcp, tls)"
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
        f"{path}:3: catalog.settings.push: timeout ({push.timeout:g}s) must not exceed "
        f"interval ({short:g}s)"
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


def test_defaults_only_config_has_every_catalog_target() -> None:
    config = load_probe_config(None, require_identity=False)
    assert config.source == BUILTIN
    assert config.site == "local"
    assert config.digest == EMPTY_SHA256
    assert config.targets == tuple(catalog.targets())
    assert config.targets  # the catalog is not empty
    assert (config.concurrency, config.jitter, config.trust_system) == (32, 0.1, True)


def test_custom_target_replaces_the_catalog_one_in_place(tmp_path: Path) -> None:
    courier = next(t for t in catalog.targets(["push"]) if t.check == "tls")
    path = write(
        tmp_path,
        f"""
        catalog:
          groups: [push]
        targets:
          - host: {courier.host}
            port: {courier.port}
            check: tls
            sni: courier.push.apple.com
            interval: 10s
          - {{host: 192.0.2.1, port: 22, check: tcp, group: lab}}
        """,
    )
    config = load_probe_config(path, require_identity=False)
    expected = list(catalog.targets(["push"]))
    index = expected.index(courier)
    ours = config.targets[index]
    assert (ours.key, ours.group, ours.interval, ours.timeout, ours.anchors) == (
        courier.key,
        "custom",
        10.0,
        10.0,
        (),
    )
    assert len(config.targets) == len(expected) + 1
    assert config.targets[-1].key == ("192.0.2.1", 22, "tcp")
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
        schedule: {{concurrency: 4, jitter: 0}}
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
    assert (config.concurrency, config.jitter) == (4, 0.0)
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
