"""Bounds on what one Result may carry, applied the same way on both sides of the stream.

The collector announces `max_string_bytes` in its Welcome; the probe cuts every free-text field
to it before sending (so a 200 KB issuer made up by an inspection box costs a few hundred bytes,
and the result is still delivered, never refused), and the collector cuts again on arrival,
since a hostile client need not listen. Lists are capped too: a CNAME chain, the addresses of
an answer and the presented chain have natural sizes far below these caps.

Identity fields (target, check, group, via, address family) are not cut: the config already
bounds them, and cutting them could merge two series into one; the collector refuses a result
whose identity is out of bounds instead.
"""

from __future__ import annotations

from typing import Final

from courierwatch.v1 import courierwatch_pb2 as pb

DEFAULT_MAX_STRING_BYTES: Final = 1024
MAX_LIST: Final = 64  # entries of cname_chain, addresses, tls.chain_subjects
_MARK: Final = "…"
_MARK_BYTES: Final = len(_MARK.encode())


def cut(text: str, max_bytes: int) -> str:
    """`text` in at most max_bytes of UTF-8, ending in an ellipsis when cut (never mid-char)."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    keep = data[: max(0, max_bytes - _MARK_BYTES)].decode(errors="ignore")
    return keep + _MARK


def bound(result: pb.Result, max_bytes: int) -> int:
    """Cut `result`'s free-text fields and lists in place; how many were cut (0: untouched)."""
    cuts = 0
    for owner, name in (
        (result, "detail"), (result, "peer_address"), (result, "pop"), (result, "dialled_host"),
        (result.tls, "version"), (result.tls, "alpn"), (result.tls, "leaf_subject"),
        (result.tls, "issuer"), (result.tls, "verified_by"),
    ):  # fmt: skip
        value = getattr(owner, name)
        if len(value) > max_bytes // 4 and len(value.encode()) > max_bytes:
            setattr(owner, name, cut(value, max_bytes))
            cuts += 1
    for items in (result.cname_chain, result.addresses, result.tls.chain_subjects):
        if len(items) > MAX_LIST:
            del items[MAX_LIST:]
            cuts += 1
        for index, value in enumerate(items):
            if len(value.encode()) > max_bytes:
                items[index] = cut(value, max_bytes)
                cuts += 1
    return cuts
