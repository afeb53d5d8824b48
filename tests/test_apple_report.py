"""`courierwatch check` as a readiness report: push state, action items, 80 columns, JSON,
exit status, and a whole run taking about as long as its slowest check."""

import dataclasses
import json
import re

import yaml

from courierwatch.probe import catalog
from courierwatch.probe.oneshot import readiness, report
from courierwatch.probe.oneshot.run import check_once
from courierwatch.v1 import courierwatch_pb2 as pb
from fakeapple import (
    COURIER_ALPN,
    COURIER_SNI,
    NTP_NAME,
    SINKHOLE_NAME,
    NtpMode,
    ProxyMode,
)
from fakeapple.probing import (
    check,
    check_context,
    config_document,
)

WIDTH = 80


def courier(port, **fields):
    """A courier target as a config writes it."""
    return {
        "host": COURIER_SNI,
        "port": port,
        "check": "courier",
        "group": "push",
        "numbers": [1, 2, 3],
        "alpn": [COURIER_ALPN],
        "timeout": "2s",
        **fields,
    }


async def run(tmp_path, document, *, as_json, capsys):
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(document))
    code = await check_once(str(path), as_json=as_json)
    return code, capsys.readouterr().out


def assert_fits(text):
    too_wide = [line for line in text.splitlines() if len(line) > WIDTH]
    assert too_wide == []


async def test_5223_blocked_with_443_open_is_degraded(apple):
    ctx = check_context(apple)
    fields = {
        "host": COURIER_SNI,
        "check": "courier",
        "group": "push",
        "numbers": (1, 2, 3),
        "alpn": (COURIER_ALPN,),
    }
    blocked = await check(ctx, port=apple.closed_port, **fields)
    fallback = await check(ctx, port=apple.courier_port, **fields)
    assert (blocked.outcome, fallback.outcome) == (pb.OUTCOME_REFUSED, pb.OUTCOME_OK)
    # The fake cannot listen on 5223 and 443; the results are real, only their labels say
    # which of the two ports each stood for.
    blocked.port, fallback.port = 5223, 443
    assessed = readiness.assess(
        [blocked, fallback], site="ams", probe="pi", elapsed=0.2, groups=catalog.describe(["push"])
    )
    assert (assessed.push.state, assessed.push.summary) == (
        "degraded",
        "5223 blocked, 443 fallback only",
    )
    assert assessed.push.pops == ("eu-central",)
    assert not assessed.ready
    text = report.readiness_text(assessed)
    assert_fits(text)
    assert "Push (APNs couriers): DEGRADED, 5223 blocked, 443 fallback only" in text
    assert "x  courier.push.apple.com:5223 courier: refused\n       connection refused" in text
    assert "-> allow TCP 5223 outbound to 17.0.0.0/8" in text
    assert "NOT READY: critical services fail: push" in text
    document = json.loads(report.readiness_json(assessed))
    assert document["push"] == {
        "state": "degraded",
        "summary": "5223 blocked, 443 fallback only",
        "pops": ["eu-central"],
        "proxy": "",
    }


def test_push_states_from_results():
    def result(port, outcome, **fields):
        return pb.Result(check="courier", group="push", port=port, outcome=outcome, **fields)

    ok, refused = pb.OUTCOME_OK, pb.OUTCOME_REFUSED
    assert readiness.push_status([result(5223, ok), result(443, ok)]).state == "ok"
    both_down = readiness.push_status([result(5223, refused), result(443, refused)])
    assert both_down.state == "down"
    assert readiness.push_status([]).state == "unknown"
    partial = readiness.push_status(
        [
            result(5223, ok, address_family="ipv4"),
            result(5223, refused, address_family="ipv6"),
            result(443, refused, address_family="ipv4"),
            result(443, pb.OUTCOME_PROXY_AUTH_REQUIRED, via="proxy"),
        ]
    )
    assert (partial.state, partial.proxy) == ("ok", "proxy_auth_required")
    assert partial.summary == (
        "couriers answer on 5223; the 443 fallback is blocked; 5223 fails over ipv6"
    )


async def test_report_names_each_finding_with_its_action(tmp_path, apple, capsys):
    apple.proxy.mode = ProxyMode.AUTH
    apple.ntp.mode = NtpMode.SILENT
    targets = [
        courier(apple.courier_port),
        courier(apple.intercepting_port, expect_issuer=["Fake Apple"]),
        {"host": SINKHOLE_NAME, "check": "dns", "group": "push"},
        {
            "host": "api.push.apple.com",
            "port": apple.provider_h1_port,
            "check": "tls",
            "group": "push_provider",
            "alpn": ["h2", "http/1.1"],
            "require_alpn": "h2",
        },
        {
            "host": NTP_NAME,
            "port": apple.ntp_port,
            "check": "ntp",
            "group": "device_setup",
            "timeout": "300ms",
        },
        {"host": "nxdomain.apple.com", "port": 443, "check": "tls", "group": "app_store"},
    ]
    document = config_document(
        apple, targets, proxy={"url": f"http://{apple.host}:{apple.proxy_port}"}
    )
    code, text = await run(tmp_path, document, as_json=False, capsys=capsys)
    assert code == 1
    assert_fits(text)
    flat = " ".join(text.split())  # action items wrap at 80 columns
    for action in (
        "exempt *.push.apple.com from SSL inspection",
        "allow *.push.apple.com in the DNS filter",
        f"the proxy {apple.host}:{apple.proxy_port} wants credentials, which apsd cannot give:"
        " exempt *.push.apple.com from authentication there, or allow 5223 direct",
        "a middlebox strips HTTP/2",
        f"allow UDP {apple.ntp_port} outbound to {NTP_NAME}",
        "the resolver cannot find nxdomain.apple.com",
    ):
        assert action in flat, action
    assert "tls_intercepted" in text and "Fake Zscaler" in text
    ports = sorted((apple.courier_port, apple.intercepting_port))
    assert (
        f"Through the proxy {apple.host}:{apple.proxy_port}: {ports[0]} proxy_auth_required,"
        f" {ports[1]} proxy_auth_required"
    ) in flat
    assert f"Time: {NTP_NAME} [ipv4] timeout" in text
    # Only App Store fails outside the critical groups; it is listed but not in the verdict.
    assert "NOT READY: critical services fail: push, push_provider, device_setup" in text
    # Four TCP-based targets are also checked through the proxy: 6 + 4 results.
    assert text.rstrip().splitlines()[-1] == "10 checks, 1 ok, 9 failed"

    code, out = await run(tmp_path, document, as_json=True, capsys=capsys)
    data = json.loads(out)
    assert code == 1 and data["schema"] == "courierwatch.check/1" and not data["ready"]
    assert data["push"]["proxy"] == "proxy_auth_required"
    assert data["time"][0]["outcome"] == "timeout" and data["time"][0]["offset_seconds"] is None
    groups = {g["id"]: g for g in data["groups"]}
    assert not groups["app_store"]["critical"] and groups["push"]["critical"]
    sinkhole = next(f for f in groups["push"]["failures"] if f["outcome"] == "dns_sinkhole")
    assert sinkhole["action"] == "allow *.push.apple.com in the DNS filter"
    assert len(data["results"]) == data["checks"] == 10
    assert data["actions"][0] in {f["action"] for f in groups["push"]["failures"]}
    # Schema courierwatch.check/1 only grows: the site state and its causes, the blockers,
    # the proxy per port, a clock's criticality and a group's down sit beside the old keys.
    assert set(data) >= {
        "schema", "site", "probe", "ready", "elapsed_seconds", "slowest_seconds", "checks",
        "ok", "failed", "push", "time", "groups", "actions", "results",
        "blockers", "site_state", "proxy",
    }  # fmt: skip
    causes = {(c["state"], c["cause"], c["group"]) for c in data["site_state"]["causes"]}
    assert {
        ("intercepted", "tls_inspection", "push"),
        ("filtered", "dns_filter", "push"),
        ("degraded", "provider_api_h2", "push_provider"),
        ("degraded", "proxy_path", "push"),
    } <= causes
    assert data["site_state"]["state"] == data["site_state"]["causes"][0]["state"]
    assert (
        "site intercepted (push: tls_inspection), filtered (push: dns_filter)" in data["blockers"]
    )
    assert data["time"][0]["critical"] is False and groups["device_setup"]["down"]
    assert data["proxy"]["address"] == f"{apple.host}:{apple.proxy_port}"


async def test_exit_0_when_only_non_critical_groups_fail(tmp_path, apple, capsys):
    targets = [
        courier(apple.courier_port),
        {"host": NTP_NAME, "port": apple.ntp_port, "check": "ntp", "group": "device_setup"},
        {"host": "nxdomain.apple.com", "port": 443, "check": "tcp", "group": "software_updates"},
    ]
    code, text = await run(tmp_path, config_document(apple, targets), as_json=False, capsys=capsys)
    assert code == 0
    assert "READY: every critical service works" in text
    assert "Push (APNs couriers): OK, couriers answer on" in text
    offset = re.search(rf"Time: {NTP_NAME} \[ipv4\] offset ([-+][\d.]+) s, stratum 2", text)
    assert offset and abs(float(offset[1]) - apple.ntp.offset) < 0.05
    assert "FAIL Software updates" in text


async def test_whole_run_takes_about_its_slowest_check(tmp_path, apple, capsys):
    # 70 checks that each wait 0.4 s for a handshake that never comes: in sequence 28 s, in
    # rounds of the daemon's 32 about 1.2 s; all at once about 0.4 s.
    names = [f"slow{i}.apple.com" for i in range(70)]
    for name in names:
        apple.dns.add_a(name, apple.host)
    targets = [
        {"host": name, "port": apple.silent_port, "check": "tls", "timeout": "400ms"}
        for name in names
    ]
    code, out = await run(tmp_path, config_document(apple, targets), as_json=True, capsys=capsys)
    data = json.loads(out)
    assert code == 1 and data["checks"] == 70 and data["failed"] == 70
    assert data["slowest_seconds"] >= 0.4
    assert data["elapsed_seconds"] < data["slowest_seconds"] + 0.4  # one round, not three


async def test_the_whole_catalog_against_the_fake_fits_80_columns(tmp_path, apple, capsys):
    document = config_document(apple, [])
    document.pop("catalog")  # every group
    document.pop("apple")  # Apple's real ranges: the fake's loopback answers are filtering
    code, text = await run(tmp_path, document, as_json=False, capsys=capsys)
    assert code == 1
    assert_fits(text)
    assert "Push (APNs couriers): DOWN" in text
    # The same fix for many hosts is one to-do naming a few of them, not a page per host.
    todo = text.split("To do:")[1].split("\n\n")[0]
    items = re.findall(r"^\s*\d+\. ", todo, re.MULTILINE)
    assert len(items) == 2  # NXDOMAIN for most names, a sinkhole for those the fake knows
    assert re.search(r"the resolver cannot find .* and \d+ more: check DNS", " ".join(todo.split()))
    assert "more like these)" in text
    # The site block names the worst causes with their fixes, then how many more there are.
    site = text.split("Push (APNs couriers)")[0]
    assert site.count("\n  and ") == 7 and re.search(r"\(and \d+ more causes, in the groups", site)


def test_one_fix_for_many_hosts_is_one_todo():
    actions = [
        readiness.Action("allow {} in the DNS filter", host)
        for host in (
            "a.apple.com",
            "b.apple.com",
            "a.apple.com",
            "c.apple.com",
            "d.apple.com",
            "e.apple.com",
        )
    ]
    actions.append(readiness.Action("exempt {} from SSL inspection", "*.push.apple.com"))
    assert readiness.merge(actions) == [
        "allow a.apple.com, b.apple.com, c.apple.com and 2 more in the DNS filter",
        "exempt *.push.apple.com from SSL inspection",
    ]


def test_readiness_is_stable_without_results():
    assessed = readiness.assess([], site="s", probe="p", groups=())
    assert assessed.ready and assessed.push.state == "unknown"
    assert report.readiness_text(assessed).splitlines()[-1] == "0 checks, 0 ok, 0 failed"
    assert dataclasses.asdict(assessed.push)["pops"] == ()
