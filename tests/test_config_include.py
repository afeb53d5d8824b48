"""probe.yaml's `include:` (a `--write-targets` file, or several) and `discover:` keys, and the
advisory groups they bring: what they load, the errors naming the included file, the digest."""

from __future__ import annotations

from pathlib import Path

import pytest
from data import make_sample

from courierwatch.common import sitestate
from courierwatch.common.configfile import ConfigError, digest
from courierwatch.discover import targets as written_targets
from courierwatch.discover.run import discover
from courierwatch.probe.checks import dns_clients
from courierwatch.probe.config import ADVISORY_GROUPS, load_probe_config
from courierwatch.probe.oneshot import readiness
from courierwatch.v1 import courierwatch_pb2 as pb

OWN = "targets:\n  - {host: mdm.example.net, port: 443, check: tls}\n"


def load(path: Path):
    return load_probe_config(str(path), require_identity=False, host_has_ipv6=lambda: False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def matches(text: str, expected: str) -> bool:
    """Equal; or, for an expected text ending in "...", beginning with it (the wording of the
    tail belongs to the config reader's own converters)."""
    if expected.endswith("..."):
        return text.startswith(expected.removesuffix("..."))
    return text == expected


def error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    return str(info.value)


@pytest.fixture(scope="module")
def discovered(tmp_path_factory) -> Path:
    """What `courierwatch discover site-sample.pcapng --write-targets` writes."""
    path = tmp_path_factory.mktemp("discover") / "discovered.yaml"
    assert written_targets.write(str(path), discover([str(make_sample.SAMPLE)])) == 6
    return path


def test_include_adds_a_write_targets_file_to_the_config_s_own(tmp_path, discovered):
    (tmp_path / "etc").mkdir()
    copy = write(tmp_path / "etc" / "discovered.yaml", discovered.read_text())
    # Relative to the config file, not to the working directory.
    config = load(write(tmp_path / "etc" / "probe.yaml",
                        f"catalog: {{groups: []}}\ninclude: {copy.name}\n{OWN}"))  # fmt: skip
    keys = [t.key for t in config.targets if t.family != "ipv6"]
    assert keys[0] == ("mdm.example.net", 443, "tls")  # the config's own first
    assert ("metrics.icloud.com", 53, "dns") in keys
    assert ("gspe19-ssl.ls.apple.com", 443, "tls") in keys
    assert len({t.key for t in config.targets}) == 1 + 12  # 6 names, dns + tls each
    assert {t.group for t in config.targets} == {"custom", written_targets.GROUP}
    facts = {g.id: g for g in config.groups}
    assert facts["custom"].critical  # a config's own group: critical, as the catalog says
    assert not facts[written_targets.GROUP].critical
    assert facts[written_targets.GROUP].title == ADVISORY_GROUPS[written_targets.GROUP]


def test_a_list_of_files_and_the_targets_file_spelling(tmp_path):
    write(tmp_path / "a.yaml", "targets:\n  - {host: a.example.net, port: 443, check: tls}\n")
    write(tmp_path / "b.yaml", "targets: []\n")
    write(tmp_path / "c.yaml", "# only comments\n")
    text = "catalog: {groups: []}\ntargets_file: [a.yaml, b.yaml, c.yaml]\n"
    config = load(write(tmp_path / "probe.yaml", text))
    assert [t.key for t in config.targets] == [("a.example.net", 443, "tls")]


def test_the_included_bytes_are_part_of_the_digest(tmp_path):
    plain = write(tmp_path / "plain.yaml", "catalog: {groups: []}\n")
    assert load(plain).digest == digest(plain.read_bytes())  # no include: as before
    included = write(tmp_path / "inc.yaml", "targets: []\n")
    path = write(tmp_path / "probe.yaml", "catalog: {groups: []}\ninclude: inc.yaml\n")
    first = load(path).digest
    assert first not in (digest(path.read_bytes()), load(plain).digest)
    assert load(path).digest == first
    write(included, "targets: []  # edited\n")
    assert load(path).digest != first


@pytest.mark.parametrize(
    ("included", "line", "message"),
    [
        ("targets:\n  - {host: a.example.net, port: 99999, check: tls}\n", 2,
         "targets[0].port: must be an integer from 1 to 65535, got 99999"),
        ("site: elsewhere\ntargets: []\n", 1, "unknown key 'site'..."),
        ("targets:\n  - {host: a.example.net, check: tls, group: discovered}\n", 2,
         "targets[0].port: is required"),
        ("targets: {host: a.example.net}\n", 1, "targets: must be a list, got a mapping"),
        ("targets:\n  - {host: mdm.example.net, port: 443, check: tls}\n", 2,
         "targets[0]: duplicate target mdm.example.net:443 tls (also targets[0], line 4)"),
    ],
)  # fmt: skip
def test_errors_name_the_included_file_its_line_and_field(tmp_path, included, line, message):
    inc = write(tmp_path / "inc.yaml", included)
    path = write(tmp_path / "probe.yaml", f"catalog: {{groups: []}}\ninclude: inc.yaml\n{OWN}")
    assert matches(error(path), f"{inc}:{line}: {message}")


def test_a_duplicate_between_two_included_files_names_both(tmp_path):
    entry = "targets:\n  - {host: a.example.net, port: 443, check: tls}\n"
    write(tmp_path / "a.yaml", entry)
    b = write(tmp_path / "b.yaml", entry)
    path = write(tmp_path / "probe.yaml", "catalog: {groups: []}\ninclude: [a.yaml, b.yaml]\n")
    assert error(path) == (
        f"{b}:2: targets[0]: duplicate target a.example.net:443 tls "
        f"(also targets[0] of {tmp_path / 'a.yaml'}, line 2)"
    )


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("include: nope.yaml", "include: cannot read '{dir}/nope.yaml': No such file or directory"),
        ("include: 3", "include: must be a file path or a list of them, got 3"),
        ("include: [3]", "include[0]: must be a file path, got 3"),
        ("include: a.yaml\ntargets_file: a.yaml", "targets_file: include and targets_file are "
         "one key: write one"),
    ],
)  # fmt: skip
def test_errors_of_the_include_key_name_the_config(tmp_path, key, message):
    write(tmp_path / "a.yaml", "targets: []\n")
    path = write(tmp_path / "probe.yaml", f"catalog: {{groups: []}}\n{key}\n")
    line = 3 if "targets_file" in key else 2
    assert error(path) == f"{path}:{line}: {message.format(dir=tmp_path)}"


def test_discover_makes_one_dns_clients_target(tmp_path):
    text = "catalog: {groups: []}\ndiscover: {pihole_db: pihole/FTL.db, top: 3}\n"
    path = write(tmp_path / "etc" / "probe.yaml", text)
    (target,) = load(path).targets
    assert (target.host, target.port, target.check, target.group) == (
        dns_clients.HOST, dns_clients.PORT, "dns_clients", dns_clients.GROUP,
    )  # fmt: skip
    assert target.option("database") == str(tmp_path / "etc" / "pihole" / "FTL.db")
    assert (target.option("top"), target.option("rows")) == (3, dns_clients.ROWS.default)
    assert (target.interval, target.timeout) == (60.0, 30.0)
    (group,) = load(path).groups
    assert (group.id, group.critical) == (dns_clients.GROUP, False)


@pytest.mark.parametrize(
    ("discover_key", "message"),
    [
        ("{pihole_db: x.db, top: 0}", "discover.top: must be an integer from 1 to 100, got 0"),
        ("{pihole_db: x.db, rows: 0}",
         "discover.rows: must be an integer from 1 to 500000, got 0"),
        ("{pihole_db: x.db, interval: 0.5s}",
         "discover.interval: must be a duration from 1s to 1d ..."),
        ("{top: 5}", "discover.pihole_db: is required when discover.top is set"),
        ("{pihole_db: x.db, every: 1m}", "discover: unknown key 'every'..."),
    ],
)  # fmt: skip
def test_errors_of_the_discover_key(tmp_path, discover_key, message):
    path = write(tmp_path / "probe.yaml", f"catalog: {{groups: []}}\ndiscover: {discover_key}\n")
    assert matches(error(path), f"{path}:2: {message}")


def test_discover_and_a_dns_clients_target_of_its_own_are_one_too_many(tmp_path):
    path = write(tmp_path / "probe.yaml", (
        "catalog: {groups: []}\n"
        "targets:\n  - {host: 127.0.0.1, check: dns_clients, database: /var/x.db}\n"
        "discover:\n  pihole_db: x.db\n"
    ))  # fmt: skip
    assert error(path) == (
        f"{path}:5: discover: duplicate target 127.0.0.1:53 dns_clients (also targets[0], line 3)"
    )


def test_advisory_groups_never_make_the_site_unreachable_nor_not_ready(tmp_path, discovered):
    path = write(tmp_path / "probe.yaml", (
        f"catalog: {{groups: []}}\ninclude: {discovered}\ndiscover: {{pihole_db: x.db}}\n{OWN}"
    ))  # fmt: skip
    config = load(path)
    critical = {g.id: g.critical for g in config.groups}

    def failed(target: str, group: str, check: str) -> pb.Result:
        return pb.Result(target=target, port=443, check=check, group=group,
                         outcome=pb.OUTCOME_TIMEOUT, detail="no answer in time")  # fmt: skip

    discovered_down = failed("metrics.icloud.com", written_targets.GROUP, "tls")
    database_error = pb.Result(target="127.0.0.1", port=53, check="dns_clients",
                               group=dns_clients.GROUP, outcome=pb.OUTCOME_ERROR,
                               detail="x.db: no such file")  # fmt: skip
    state = sitestate.assess([discovered_down, database_error], critical)
    assert state.state == sitestate.DEGRADED
    assert {(c.cause, c.group) for c in state.causes} == {
        (sitestate.GROUP_DOWN, written_targets.GROUP), (sitestate.GROUP_DOWN, dns_clients.GROUP),
    }  # fmt: skip
    report = readiness.assess([discovered_down, database_error], groups=config.groups)
    assert report.ready
    # The config's own group is still critical: the same failure there is NOT READY.
    own = failed("mdm.example.net", "custom", "tls")
    assert not readiness.assess([own], groups=config.groups).ready
    assert sitestate.assess([own], critical).state == sitestate.UNREACHABLE


def test_a_blocking_pass_is_the_client_dns_filter_cause():
    result = pb.Result(
        target="127.0.0.1",
        port=53,
        check="dns_clients",
        group=dns_clients.GROUP,
        outcome=pb.OUTCOME_DNS_SINKHOLE,
        detail=f"{dns_clients.BLOCKED_WORDS}: push 6 (1-courier.push.apple.com)",
    )
    dns = pb.Result(target="gs.apple.com", port=53, check="dns", group="device_setup",
                    outcome=pb.OUTCOME_DNS_SINKHOLE, detail="answered 0.0.0.0")  # fmt: skip
    causes = sitestate.assess([result, dns], {dns_clients.GROUP: False}).causes
    assert [(c.state, c.cause, c.group) for c in causes] == [
        (sitestate.FILTERED, sitestate.CLIENT_DNS_FILTER, dns_clients.GROUP),
        (sitestate.FILTERED, sitestate.DNS_FILTER, "device_setup"),
    ]
    assert causes[0].detail == f"127.0.0.1: {result.detail}"
