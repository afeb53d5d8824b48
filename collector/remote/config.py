"""The collector config's `remote_write:` section: where the store is and the sender's limits.

    remote_write:
      url: http://victoriametrics:8428/api/v1/write   # required: http:// or https://
      headers: {X-Scope-OrgID: noc}    # sent with every request (a tenant, a token)
      max_queued_samples: 500000       # held for the store at most (about 240 bytes each)
      max_request_samples: 50000       # in one request at most
      concurrency: 1                   # requests in flight
      timeout: 30s                     # per request
      state_interval: 15s              # how often each live probe's state is written

Absent (or null): scrape mode, the default.

state_interval: every so often (1 s to 30 s) the collector writes the probe-level state of each
probe streaming to it (remote/current.py); the rules call a probe down once nothing has been
written for a minute, so the interval must stay well under that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Final
from urllib.parse import urlsplit

from courierwatch.common.configfile import Section, to_str

__all__ = ["RemoteWriteConfig", "read_remote_write"]

# Headers the sender sets itself: the specification's.
_OWN_HEADERS: Final = frozenset(
    {"content-encoding", "content-type", "x-prometheus-remote-write-version", "content-length"}
)
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token


@dataclass(frozen=True, slots=True)
class RemoteWriteConfig:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    max_queued_samples: int = 500_000
    max_request_samples: int = 50_000
    concurrency: int = 1
    timeout: float = 30.0
    state_interval: float = 15.0


def read_remote_write(sec: Section, present: bool) -> RemoteWriteConfig | None:
    """The section under `remote_write`; None when it is not `present` (scrape mode)."""
    if not present:
        return None
    sec.check_keys(*(f.name for f in fields(RemoteWriteConfig)))  # each is a key
    url = sec.value("url", _url)
    default = RemoteWriteConfig(url=url)
    max_request = sec.integer("max_request_samples", default.max_request_samples,
                              min=100, max=10_000_000)  # fmt: skip
    max_queued = sec.integer("max_queued_samples", default.max_queued_samples,
                             min=1000, max=100_000_000)  # fmt: skip
    if max_queued < max_request:
        raise sec.error(f"must be at least max_request_samples ({max_request}), "
                        f"got {max_queued}", "max_queued_samples")  # fmt: skip
    return RemoteWriteConfig(
        url=url,
        headers=_headers(sec.section("headers")),
        max_queued_samples=max_queued,
        max_request_samples=max_request,
        concurrency=sec.integer("concurrency", default.concurrency, min=1, max=64),
        timeout=sec.duration("timeout", default.timeout, within=(1.0, 600.0)),
        state_interval=sec.duration("state_interval", default.state_interval, within=(1.0, 30.0)),
    )


def _url(value: Any) -> str:
    text = to_str()(value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL, got {text!r}")
    return text


def _headers(sec: Section) -> dict[str, str]:
    headers = {}
    for name in sec.names():
        if not _HEADER_NAME.fullmatch(name):
            raise sec.error(f"{name!r} is not an HTTP header name", name)
        if name.lower() in _OWN_HEADERS:
            raise sec.error("is set by the remote-write protocol itself", name)
        headers[name] = sec.string(name, pattern=re.compile(r"[^\r\n]*"),
                                   what="a header value on one line")  # fmt: skip
    return headers
