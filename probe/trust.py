"""TLS client contexts for the configured trust anchors, built once and shared by all checks."""

from __future__ import annotations

import ssl
from collections.abc import Sequence


class TrustStore:
    def __init__(self, anchors: Sequence[str] = (), system: bool = True) -> None:
        self._anchors = tuple(anchors)
        self._system = system
        self._verifying: dict[tuple[tuple[str, ...], tuple[str, ...]], ssl.SSLContext] = {}
        self._inspecting: dict[tuple[str, ...], ssl.SSLContext] = {}

    def verifying(self, extra: Sequence[str] = (), alpn: Sequence[str] = ()) -> ssl.SSLContext:
        """A context that verifies the chain and the name, as a device does."""
        key = (tuple(extra), tuple(alpn))
        context = self._verifying.get(key)
        if context is None:
            context = ssl.create_default_context() if self._system else _bare_context()
            for path in (*self._anchors, *extra):
                context.load_verify_locations(cafile=path)
            _offer(context, alpn)
            self._verifying[key] = context
        return context

    def inspecting(self, alpn: Sequence[str] = ()) -> ssl.SSLContext:
        """A context that accepts any chain: used only to read what a failing peer presents."""
        key = tuple(alpn)
        context = self._inspecting.get(key)
        if context is None:
            context = _bare_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            _offer(context, alpn)
            self._inspecting[key] = context
        return context


def _bare_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _offer(context: ssl.SSLContext, alpn: Sequence[str]) -> None:
    if alpn:
        context.set_alpn_protocols(list(alpn))
