"""The shared reading of results: one rule for courier state, one label per outcome."""

import pytest

from courierwatch.common.results import courier_state, outcome_label
from courierwatch.v1 import courierwatch_pb2 as pb

OK, REFUSED = pb.OUTCOME_OK, pb.OUTCOME_REFUSED


def courier(port, outcome, via="direct", family="ipv4"):
    return pb.Result(check="courier", port=port, outcome=outcome, via=via,
                     address_family=family)


@pytest.mark.parametrize(
    ("results", "state"),
    [
        ([], None),
        ([pb.Result(check="tls", port=5223, outcome=OK)], None),
        ([courier(5223, OK), courier(443, REFUSED)], "ok"),
        ([courier(5223, REFUSED), courier(443, OK)], "degraded"),
        ([courier(5223, REFUSED), courier(443, REFUSED)], "down"),
        ([courier(443, OK)], "degraded"),  # no primary result: the fallback alone is not ok
        # one family working is enough for devices to get pushes
        ([courier(5223, REFUSED, family="ipv6"), courier(5223, OK)], "ok"),
        # the proxy path is reported beside, it does not make the site healthy
        ([courier(5223, REFUSED), courier(443, REFUSED), courier(5223, OK, via="proxy")],
         "down"),
    ],
)
def test_courier_state(results, state):
    assert courier_state(results) == state


def test_outcome_labels_and_unknown_numbers():
    assert outcome_label(pb.OUTCOME_DNS_SINKHOLE) == "dns_sinkhole"
    assert outcome_label(9999) == "unknown"
