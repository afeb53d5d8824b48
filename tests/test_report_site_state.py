"""`courierwatch check` tells the site state the collector shows (common.sitestate), each cause
with its fix; READY needs no unreachable, filtered or intercepted cause and no critical clock
skew; the proxy summary is per port; fix texts name the configured ranges, family, proxy and
resolver; and no text says apsd cannot use a PAC file."""

import asyncio
import contextlib
import json
import re
import socket
from pathlib import Path

import pytest
import yaml

from courierwatch.probe import catalog
from courierwatch.probe.oneshot import readiness, report
from courierwatch.probe.oneshot.run import check_once
from courierwatch.probe.sanity import parse_ranges
from courierwatch.v1 import courierwatch_pb2 as pb
from fakeapple import COURIER_ALPN, COURIER_NUMBERS, COURIER_SNI, NTP_NAME, SINKHOLE_NAME
from fakeapple.probing import LAB_RANGES, check, check_context, config_document

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 80
COURIER = {
    "host": COURIER_SNI,
    "check": "courier",
    "group": "push",
    "numbers": (1, 2, 3),
    "alpn": (COURIER_ALPN,),
}


def courier(port, **fields):
    """A courier target as a config writes it."""
    return {**COURIER, "port": port, "numbers": [1, 2, 3], "alpn": [COURIER_ALPN], **fields}


async def run(tmp_path, document, capsys):
    """The report's text and JSON for one config, and the exit status (the same both times)."""
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(document))
    code = await check_once(str(path), as_json=False)
    text = capsys.readouterr().out
    assert await check_once(str(path), as_json=True) == code
    data = json.loads(capsys.readouterr().out)
    assert [line for line in text.splitlines() if len(line) > WIDTH] == []
    return code, text, data


def flat(text):
    return " ".join(text.split())  # lines wrap at 80 columns


async def test_a_dns_filter_on_the_couriers_is_the_site_state_not_an_outage(
    tmp_path, apple, capsys
):
    for n in COURIER_NUMBERS:  # a Pi-hole answers every courier name
        apple.dns.remove(f"{n}-courier.push.apple.com")
        apple.dns.add_a(f"{n}-courier.push.apple.com", "0.0.0.0")
    targets = [courier(apple.courier_port), courier(apple.intercepting_port)]
    code, text, data = await run(tmp_path, config_document(apple, targets), capsys)
    assert code == 1
    site = text.split("Push (APNs couriers)")[0]
    assert re.search(
        r"^Site: FILTERED — dns_filter \(push\): push is blocked: \d-courier\.push\.apple\.com:",
        site,
        re.MULTILINE,
    )
    assert "   -> allow *.push.apple.com in the DNS filter" in site
    assert "UNREACHABLE" not in text and "couriers unreachable" not in text
    assert "Push (APNs couriers): DOWN, blocked by a DNS filter" in text
    assert "NOT READY: critical services fail: push; site filtered (push: dns_filter)" in text
    state = data["site_state"]
    assert state["state"] == "filtered" and len(state["causes"]) == 1
    (cause,) = state["causes"]
    assert (cause["state"], cause["cause"], cause["group"]) == ("filtered", "dns_filter", "push")
    assert cause["detail"].startswith("push is blocked: ")
    assert cause["actions"] == ["allow *.push.apple.com in the DNS filter"]
    assert data["blockers"] == ["critical services fail: push", "site filtered (push: dns_filter)"]
    assert data["site"] == "local"  # the site's name stays where it was


async def test_filtering_in_a_non_critical_group_is_not_ready(tmp_path, apple, capsys):
    targets = [
        courier(apple.courier_port),
        {"host": SINKHOLE_NAME, "check": "dns", "group": "app_store"},
        {"host": "nxdomain.apple.com", "port": 443, "check": "tcp", "group": "icloud"},
    ]
    code, text, data = await run(tmp_path, config_document(apple, targets), capsys)
    assert code == 1 and not data["ready"]
    assert "Site: FILTERED — dns_filter (app_store): sinkhole.push.apple.com:" in flat(text)
    # A non-critical group merely failing is a degraded site, listed after the filter.
    assert "and DEGRADED — group_down (icloud): DNS: nxdomain.apple.com: 443" in flat(text)
    assert "NOT READY: site filtered (app_store: dns_filter)" in text
    assert [c["cause"] for c in data["site_state"]["causes"]] == ["dns_filter", "group_down"]


async def test_a_working_site_is_ok_and_ready(tmp_path, apple, capsys):
    code, text, data = await run(
        tmp_path, config_document(apple, [courier(apple.courier_port)]), capsys
    )
    assert code == 0 and data["ready"] and data["blockers"] == []
    assert "\nSite: OK\nPush (APNs couriers): OK" in text
    assert data["site_state"] == {"state": "ok", "causes": []}


def ntp_target(**fields):
    return {"host": NTP_NAME, "check": "ntp", "group": "device_setup", **fields}


async def test_a_clock_skew_short_of_critical_degrades_and_stays_ready(tmp_path, apple, capsys):
    apple.ntp.offset = 5.0
    targets = [courier(apple.courier_port), ntp_target(port=apple.ntp_port)]
    code, text, data = await run(tmp_path, config_document(apple, targets), capsys)
    assert code == 0, text
    assert "READY: every critical service works" in text
    assert re.search(
        r"Site: DEGRADED — clock_skew \(device_setup\): time\.apple\.com: clock off by \+5\.\d+ s",
        flat(text),
    )
    assert "-> set this probe's clock by NTP (it is off from time.apple.com) and check" in text
    offset = re.search(
        rf"^Time: {NTP_NAME} \[ipv4\] offset \+(5\.\d{{3}}) s, stratum 2: clock_skew$",
        text,
        re.MULTILINE,
    )
    assert offset and abs(float(offset[1]) - 5.0) < 0.05
    assert re.search(r"^warn Device setup and activation +critical +0/1 ok$", text, re.MULTILINE)
    (clock,) = data["time"]
    assert clock["outcome"] == "clock_skew" and abs(clock["offset_seconds"] - 5.0) < 0.05
    assert clock["critical"] is False
    setup = next(g for g in data["groups"] if g["id"] == "device_setup")
    assert (setup["ok"], setup["down"]) == (False, False)


@pytest.mark.parametrize("group", ["device_setup", "app_store"])
async def test_a_critical_clock_skew_is_not_ready_whatever_its_group(
    tmp_path, apple, capsys, group
):
    apple.ntp.offset = 20.0
    # The target's own threshold decides: 20 s is critical here (the default is 1 minute).
    targets = [
        courier(apple.courier_port),
        ntp_target(port=apple.ntp_port, group=group, critical_offset="10s"),
    ]
    code, text, data = await run(tmp_path, config_document(apple, targets), capsys)
    assert code == 1
    assert re.search(
        rf"^Time: {NTP_NAME} \[ipv4\] offset \+20\.\d{{3}} s, stratum 2: clock_skew, critical$",
        text,
        re.MULTILINE,
    )
    assert "clock off beyond the critical threshold: time.apple.com" in flat(text)
    assert data["time"][0]["critical"] is True
    assert abs(data["time"][0]["offset_seconds"] - 20.0) < 0.05


def test_without_targets_the_default_critical_threshold_judges():
    def skew(offset):
        facts = pb.NtpFacts(offset_seconds=offset)
        return pb.Result(target=NTP_NAME, port=123, check="ntp", group="device_setup",
                         outcome=pb.OUTCOME_CLOCK_SKEW, ntp=facts)  # fmt: skip

    groups = catalog.describe(["device_setup"])
    assert readiness.assess([skew(30.0)], groups=groups).ready
    assessed = readiness.assess([skew(-90.0)], groups=groups)
    assert not assessed.ready and assessed.clocks[0].critical


def test_names_the_devices_dns_filter_blocked_get_their_fix():
    """client_dns_filter (a dns_clients pass over the site's DNS filter) has the fix of the
    results that show it, as every other filtered cause does."""
    blocked = pb.Result(target="gateway.push.apple.com", port=53, check="dns_clients",
                        group="push", outcome=pb.OUTCOME_DNS_SINKHOLE,
                        detail="blocked for devices")  # fmt: skip
    assessed = readiness.assess([blocked], groups=catalog.describe(["push"]))
    (cause,) = assessed.causes
    assert (cause.cause.state, cause.cause.cause) == ("filtered", "client_dns_filter")
    assert cause.fixes == ["allow *.push.apple.com in the DNS filter"]


async def proxied_couriers(apple, direct_works):
    """Real courier results, direct and through the fake proxy, labelled 5223 and 443 (the
    fake cannot listen on both): through the proxy 443 works and 5223 is refused (403)."""
    ctx = check_context(apple, proxy=True)
    apple.proxy.connect_ports = {apple.courier_port}
    direct_port = apple.courier_port if direct_works else apple.closed_port
    results = {
        ("direct", 5223): await check(ctx, port=direct_port, **COURIER),
        ("direct", 443): await check(ctx, port=direct_port, **COURIER),
        ("proxy", 443): await check(ctx, port=apple.courier_port, via="proxy", **COURIER),
        ("proxy", 5223): await check(ctx, port=apple.https_port, via="proxy", **COURIER),
    }
    for (_, port), result in results.items():
        result.port = port
    return results


def assessed_with_proxy(apple, results):
    facts = readiness.Facts(
        ranges=parse_ranges(LAB_RANGES), proxy=f"{apple.host}:{apple.proxy_port}"
    )
    return readiness.assess(
        list(results.values()), site="ams", probe="pi", groups=catalog.describe(["push"]),
        facts=facts,
    )  # fmt: skip


async def test_the_proxy_summary_is_per_port_and_names_the_push_it_blocks(apple):
    results = await proxied_couriers(apple, direct_works=True)
    assert results["proxy", 5223].outcome == pb.OUTCOME_PROXY_DENIED
    assert results["proxy", 443].outcome == pb.OUTCOME_OK
    proxy = f"{apple.host}:{apple.proxy_port}"
    assessed = assessed_with_proxy(apple, results)
    text = report.readiness_text(assessed)
    assert f"  Through the proxy {proxy}: 443 ok, 5223 proxy_denied" in text
    assert (
        f"Site: DEGRADED — proxy_path (push): devices that need the proxy {proxy} cannot get push: "
    ) in flat(text)
    assert f"-> allow CONNECT to courier.push.apple.com:5223 on the proxy {proxy}" in text
    document = json.loads(report.readiness_json(assessed))
    assert document["push"]["proxy"] == "proxy_denied"  # not "ok" because 443 works
    assert document["proxy"] == {
        "address": proxy,
        "couriers": [{"port": 443, "outcome": "ok"}, {"port": 5223, "outcome": "proxy_denied"}],
    }
    (cause,) = document["site_state"]["causes"]
    assert cause["actions"] == [
        f"allow CONNECT to courier.push.apple.com:5223 on the proxy {proxy}"
    ]


async def test_the_proxy_as_the_only_way_to_push_is_a_finding_with_both_fixes(apple):
    results = await proxied_couriers(apple, direct_works=False)
    assert results["direct", 5223].outcome == pb.OUTCOME_REFUSED
    proxy = f"{apple.host}:{apple.proxy_port}"
    assessed = assessed_with_proxy(apple, results)
    text = report.readiness_text(assessed)
    assert "Push (APNs couriers): DOWN, couriers answer only through the proxy" in text
    causes = {c.cause.cause: c for c in assessed.causes}
    assert list(causes) == ["couriers_unreachable", "proxy_path"]
    assert (
        f"and DEGRADED — proxy_path (push): couriers answer only through the proxy {proxy}"
    ) in flat(text)
    fixes = causes["proxy_path"].fixes
    assert fixes == [
        f"give devices the proxy {proxy} (set by hand, by MDM or in a PAC file): couriers"
        " answer through it",
        "allow TCP 443 outbound to 127.0.0.0/8",
        "allow TCP 5223 outbound to 127.0.0.0/8",
        f"allow CONNECT to courier.push.apple.com:5223 on the proxy {proxy}",
    ]
    assert causes["couriers_unreachable"].fixes == fixes[1:3]
    assert fixes[0] in assessed.actions  # a fix only the site cause asks is a to-do too
    assert f"   -> give devices the proxy {proxy} (set by hand, by MDM or in a PAC" in text


async def test_fixes_name_the_configured_ranges_and_proxy(tmp_path, apple, capsys):
    targets = [
        courier(apple.closed_port),
        {"host": "api.push.apple.com", "port": apple.https_port, "check": "tls",
         "group": "push_provider"},
    ]  # fmt: skip
    document = config_document(
        apple, targets, proxy={"url": f"http://{apple.host}:{apple.proxy_port}"}
    )
    document["apple"]["ranges"] = [*LAB_RANGES, "fd00:17::/48"]
    apple.proxy.connect_ports = {apple.courier_port}
    _, text, data = await run(tmp_path, document, capsys)
    todo = flat(text.split("To do:")[1])
    assert f"allow TCP {apple.closed_port} outbound to 127.0.0.0/8" in todo  # its family's only
    assert "17.0.0.0/8" not in text
    proxy = f"{apple.host}:{apple.proxy_port}"
    assert re.search(
        rf"allow CONNECT to .*api\.push\.apple\.com:{apple.https_port} on the proxy {proxy}", todo
    )
    provider = next(g for g in data["groups"] if g["id"] == "push_provider")
    denied = next(f for f in provider["failures"] if f["via"] == "proxy")
    assert denied["action"] == (
        f"allow CONNECT to api.push.apple.com:{apple.https_port} on the proxy {proxy}"
    )
    assert "fd00:17::/48" not in text
    assert data["proxy"]["address"] == proxy


async def test_ipv6_failures_say_over_ipv6_with_the_ipv6_ranges(apple):
    ctx = check_context(apple)
    with socket_port("::1") as port:
        tcp = await check(ctx, host="::1", port=port, check="tcp", group="push")
        clock = await check(ctx, host="::1", port=port, check="ntp", group="device_setup")
    assert tcp.outcome == clock.outcome == pb.OUTCOME_REFUSED
    facts = readiness.Facts(ranges=parse_ranges(["17.0.0.0/8", "2620:149:a44::/48",
                                                  "2403:300:a42::/48"]))  # fmt: skip
    assert readiness.action(tcp, facts).text == (
        f"allow TCP {port} outbound over IPv6 to 2620:149:a44::/48, 2403:300:a42::/48"
    )
    assert readiness.action(clock, facts).text == f"allow UDP {port} outbound over IPv6 to ::1"
    tcp.address_family = "ipv4"  # the label, when set, is the family
    assert readiness.action(tcp, facts).text == f"allow TCP {port} outbound to 17.0.0.0/8"


@contextlib.contextmanager
def socket_port(host):
    """A port on host where nothing listens, TCP or UDP (bound for a moment, then freed)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    yield port


class _Garbled(asyncio.DatagramProtocol):
    """A "resolver" whose replies echo the question and announce an answer they do not hold."""

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        header = data[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"  # 1 answer
        self.transport.sendto(header + data[12:], addr)


async def test_a_malformed_dns_reply_gets_a_dns_fix_naming_the_resolver(tmp_path, apple, capsys):
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Garbled, local_addr=(apple.host, 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        document = config_document(
            apple, [{"host": "gdmf.apple.com", "check": "dns", "group": "device_management"}]
        )
        document["resolver"] = {"nameservers": [apple.host], "port": port}
        code, text, data = await run(tmp_path, document, capsys)
    finally:
        transport.close()
    (failure,) = data["groups"][0]["failures"]
    assert failure["outcome"] == "protocol_error", failure
    assert failure["action"] == (
        f"the resolver {apple.host}:{port} sends malformed DNS replies for gdmf.apple.com:"
        " check it, or what answers in its place on port 53"
    )
    assert "middlebox" not in text and code == 1


def test_no_text_says_devices_cannot_use_a_pac_file():
    # Apple's article 101555: devices reach APNs through an HTTP proxy set by PAC.
    texts = {
        path: (ROOT / path).read_text()
        for path in ("README.md", "probe/config.py", "deploy/probe.example.yaml",
                     "probe/oneshot/readiness.py")
    }  # fmt: skip
    wrong = re.compile(r"\bor PAC\b|\bno PAC\b|can use neither|cannot use (?:a |the )?PAC", re.I)
    assert {path: found for path, text in texts.items() if (found := wrong.findall(text))} == {}
    assert "set by hand, by MDM or in a PAC file" in texts["probe/oneshot/readiness.py"]
