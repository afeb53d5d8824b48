"""The one site state and its causes, decided from a probe's latest results."""

import pytest

from courierwatch.common import sitestate as ss
from courierwatch.v1 import courierwatch_pb2 as pb

OK = pb.OUTCOME_OK
CRITICAL = {"push": True, "push_provider": True, "device_management": True, "icloud": False}


def r(check="courier", port=5223, outcome=OK, group="push", family="", via="direct", **kw):
    target = kw.pop("target", "courier.push.apple.com")
    result = pb.Result(
        target=target, port=port, check=check, group=group, outcome=outcome,
        address_family=family, via=via, **kw,
    )  # fmt: skip
    return result


def causes(results, **kw):
    return [(c.state, c.cause, c.group) for c in ss.assess(results, CRITICAL, **kw).causes]


def test_all_working_is_ok():
    state = ss.assess([r(), r(port=443), r("tls", 443, group="device_management")], CRITICAL)
    assert (state.state, state.causes) == ("ok", ())


def test_couriers_blocked_on_every_port_is_the_outage():
    state = ss.assess([r(outcome=pb.OUTCOME_REFUSED), r(port=443, outcome=pb.OUTCOME_TIMEOUT)],
                      CRITICAL)  # fmt: skip
    assert [(c.state, c.cause, c.group) for c in state.causes] == [
        ("unreachable", "couriers_unreachable", "push")
    ]
    assert "5223 refused" in state.causes[0].detail and "443 timeout" in state.causes[0].detail


@pytest.mark.parametrize(
    ("outcome", "state", "cause"),
    [
        (pb.OUTCOME_DNS_SINKHOLE, "filtered", "dns_filter"),
        (pb.OUTCOME_DNS_HIJACK, "filtered", "dns_hijack"),
        (pb.OUTCOME_TLS_INTERCEPTED, "intercepted", "tls_inspection"),
    ],
)
def test_a_filter_or_inspection_box_is_its_finding_and_never_the_outage(outcome, state, cause):
    found = ss.assess([r(outcome=outcome), r(port=443, outcome=outcome)], CRITICAL)
    assert [(c.state, c.cause) for c in found.causes] == [(state, cause)]
    assert found.state == state
    assert found.causes[0].detail.startswith("push is blocked: ")


def test_interception_names_the_issuer():
    inspected = r(outcome=pb.OUTCOME_TLS_INTERCEPTED, tls=pb.TlsFacts(issuer="CN=Fortinet CA"))
    found = ss.assess([inspected, r(port=443)], CRITICAL)
    assert found.state == "intercepted"
    assert "issued by CN=Fortinet CA" in found.causes[0].detail
    assert not found.causes[0].detail.startswith("push is blocked")  # 443 still works
    # 5223 fails because of the inspection: that is the cause, not a fallback_only beside it.
    assert [c.cause for c in found.causes] == ["tls_inspection"]


def test_fallback_only_and_no_fallback():
    assert causes([r(outcome=pb.OUTCOME_REFUSED), r(port=443)]) == [
        ("degraded", "fallback_only", "push")
    ]
    assert causes([r(), r(port=443, outcome=pb.OUTCOME_REFUSED)]) == [
        ("degraded", "no_fallback", "push")
    ]


def test_ipv6_broken_while_ipv4_works():
    results = [
        r(family="ipv4"), r(family="ipv6", outcome=pb.OUTCOME_TIMEOUT),
        r(port=443, family="ipv4"), r(port=443, family="ipv6", outcome=pb.OUTCOME_TIMEOUT),
    ]  # fmt: skip
    assert causes(results) == [("degraded", "ipv6_broken", "push")]


def test_proxy_refusing_5223_and_the_proxy_as_the_only_way():
    refused = [r(), r(port=443), r(via="proxy", outcome=pb.OUTCOME_PROXY_DENIED)]
    found = ss.assess(refused, CRITICAL, proxy="proxy.site:3128")
    assert [(c.state, c.cause) for c in found.causes] == [("degraded", "proxy_path")]
    assert "devices that need the proxy proxy.site:3128 cannot get push" in found.causes[0].detail
    only = [r(outcome=pb.OUTCOME_REFUSED), r(port=443, outcome=pb.OUTCOME_REFUSED), r(via="proxy")]
    found = ss.assess(only, CRITICAL)
    # The devices' own path is lost (the outage); the proxy is named as the way that works.
    assert [(c.state, c.cause) for c in found.causes] == [
        ("unreachable", "couriers_unreachable"), ("degraded", "proxy_path")
    ]
    assert "only through the proxy" in found.causes[1].detail


def test_clock_skew_provider_h2_and_loss():
    results = [
        r(), r(port=443),
        r("ntp", 123, pb.OUTCOME_CLOCK_SKEW, "device_setup", target="time.apple.com",
          detail="clock off by +5.0 s"),
        r("tls", 443, pb.OUTCOME_TLS_ALPN_MISMATCH, "push_provider", target="api.push.apple.com"),
    ]  # fmt: skip
    assert causes(results, loss="5223: 12% of connects failed or retransmitted") == [
        ("degraded", "clock_skew", "device_setup"),
        ("degraded", "loss", ""),
        ("degraded", "provider_api_h2", "push_provider"),
    ]


def test_groups_down_by_their_criticality():
    results = [
        r(), r(port=443),
        r("tls", 443, pb.OUTCOME_REFUSED, "device_management", target="mdmenrollment.apple.com"),
        r("tls", 443, pb.OUTCOME_REFUSED, "icloud", target="www.icloud.com"),
        r("tls", 443, pb.OUTCOME_REFUSED, "mdm_vendor", target="mdm.example.net"),  # custom
    ]  # fmt: skip
    found = ss.assess(results, CRITICAL)
    assert found.state == "unreachable"
    assert [(c.state, c.cause, c.group) for c in found.causes] == [
        ("unreachable", "group_down", "device_management"),
        ("unreachable", "group_down", "mdm_vendor"),
        ("degraded", "group_down", "icloud"),
    ]


def test_the_worst_cause_decides_and_each_cause_is_one_entry():
    results = [
        r(outcome=pb.OUTCOME_DNS_SINKHOLE), r(port=443, outcome=pb.OUTCOME_DNS_SINKHOLE),
        r("dns", 53, pb.OUTCOME_DNS_SINKHOLE),  # the same cause, seen by the dns check too
        r("tls", 443, pb.OUTCOME_TLS_INTERCEPTED, "device_management", target="dep.apple.com"),
    ]  # fmt: skip
    found = ss.assess(results, CRITICAL)
    assert found.state == "intercepted"
    assert [(c.state, c.cause, c.group) for c in found.causes] == [
        ("intercepted", "tls_inspection", "device_management"),
        ("filtered", "dns_filter", "push"),
    ]
    assert found.causes[1].detail.startswith("push is blocked")


def test_offline_is_the_collectors_word():
    assert ss.offline().state == "probe_offline"
    assert ss.STATES.index("probe_offline") == len(ss.STATES) - 1


def test_a_critical_group_that_still_partly_works_is_degraded_not_unreachable():
    results = [
        r(), r(port=443),
        r("tls", 443, pb.OUTCOME_REFUSED, "device_management", target="mdmenrollment.apple.com"),
        r("tls", 443, OK, "device_management", target="deviceenrollment.apple.com"),
    ]  # fmt: skip
    found = ss.assess(results, CRITICAL)
    assert [(c.state, c.cause, c.group) for c in found.causes] == [
        ("degraded", "group_down", "device_management")
    ]
    assert "mdmenrollment.apple.com: 443 refused" in found.causes[0].detail


def test_a_proxy_that_wants_credentials_on_443_is_a_proxy_path_finding():
    results = [r(), r(port=443), r(via="proxy"),
               r(port=443, via="proxy", outcome=pb.OUTCOME_PROXY_AUTH_REQUIRED)]  # fmt: skip
    found = ss.assess(results, CRITICAL)
    assert [(c.state, c.cause) for c in found.causes] == [("degraded", "proxy_path")]
    assert found.causes[0].detail.endswith("courier.push.apple.com: 443 proxy_auth_required")
