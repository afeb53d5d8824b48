"""Bounds on one Result's strings and lists (courierwatch.common.bounds)."""

from courierwatch.common.bounds import MAX_LIST, bound, cut
from courierwatch.v1 import courierwatch_pb2 as pb


def test_cut_keeps_short_text_and_never_splits_a_character():
    assert cut("short", 10) == "short"
    cut_text = cut("é" * 100, 11)  # 2 bytes each
    assert len(cut_text.encode()) <= 11 and cut_text.endswith("…")
    cut_text.encode().decode()  # valid UTF-8


def test_a_hostile_issuer_and_detail_are_cut_and_identity_is_kept():
    result = pb.Result(target="courier.push.apple.com", check="courier", group="push",
                       detail="x" * 400_000, cname_chain=[f"hop{i}.example" for i in range(500)])
    result.tls.issuer = "CN=" + "A" * 200_000
    assert bound(result, 1024) == 3
    assert len(result.detail.encode()) <= 1024 and len(result.tls.issuer.encode()) <= 1024
    assert len(result.cname_chain) == MAX_LIST
    identity = (result.target, result.check, result.group)
    assert identity == ("courier.push.apple.com", "courier", "push")
    assert bound(result, 1024) == 0  # idempotent
