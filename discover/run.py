"""`courierwatch discover SOURCE...`: read every source into one tally and assess it.

A source's kind is read from its first bytes (SQLite, pcap, pcapng), anything else is read as a
query log. A source that cannot be read keeps its error on its SourceStats and the others are
read all the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from courierwatch.discover import ftl, logs, pcap
from courierwatch.discover.classify import Discovery, assess
from courierwatch.discover.tally import SourceStats, Tally
from courierwatch.probe import catalog

__all__ = ["discover", "sniff"]

_SQLITE: Final = b"SQLite format 3\x00"
_READERS: Final[dict[str, Callable[[str, Tally, str], SourceStats]]] = {
    "ftl": ftl.read,
    "pcap": pcap.read,
    "log": logs.read,
}


def sniff(path: str) -> str:
    """ "ftl", "pcap" or "log"; OSError if the file cannot be opened."""
    with open(path, "rb") as file:  # noqa: PTH123
        head = file.read(len(_SQLITE))
    if head == _SQLITE:
        return "ftl"
    if head[:4] in pcap.PCAP_MAGICS or head[:4] == pcap.PCAPNG_MAGIC:
        return "pcap"
    return "log"


def discover(
    paths: Sequence[str],
    *,
    since: float | None = None,
    until: float | None = None,
    hash_clients: bool = False,
) -> Discovery:
    tally = Tally(since=since, until=until, pop_pattern=catalog.apple().pop_pattern)
    for path in paths:
        try:
            kind = sniff(path)
        except OSError as error:
            tally.sources.append(
                SourceStats(path, "unknown", error=f"{path}: {error.strerror or error}")
            )
            continue
        _READERS[kind](path, tally, path)
    return assess(tally, hash_clients=hash_clients)
