"""TLS client contexts for the configured trust anchors, built once and shared by all checks.

Two anchor sets. "Expected": what Apple's endpoints chain to (the system store, the probe-wide
`trust.anchors`, and a target's own anchors such as the bundled Apple Root CA). "Site": CAs the
site deployed itself, such as an SSL-inspection proxy's root; a chain that verifies only
against those was re-signed on the way, which Apple's services refuse.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Hashable, Sequence


class TrustStore:
    def __init__(
        self, anchors: Sequence[str] = (), system: bool = True, site: Sequence[str] = ()
    ) -> None:
        self._anchors = tuple(anchors)
        self._system = system
        self._site = tuple(site)
        self._contexts: dict[Hashable, ssl.SSLContext] = {}

    @property
    def has_site_anchors(self) -> bool:
        return bool(self._site)

    def verifying(self, extra: Sequence[str] = (), alpn: Sequence[str] = ()) -> ssl.SSLContext:
        """A context that verifies the chain and the name against the expected anchors."""

        def build() -> ssl.SSLContext:
            context = ssl.create_default_context() if self._system else _bare_context()
            for path in (*self._anchors, *extra):
                context.load_verify_locations(cafile=path)
            return context

        return self._cached(("expected", tuple(extra), tuple(alpn)), build, alpn)

    def site_verifying(self, alpn: Sequence[str] = ()) -> ssl.SSLContext:
        """A context that verifies the chain and the name against the site's anchors only."""

        def build() -> ssl.SSLContext:
            context = _bare_context()
            for path in self._site:
                context.load_verify_locations(cafile=path)
            return context

        return self._cached(("site", tuple(alpn)), build, alpn)

    def inspecting(self, alpn: Sequence[str] = ()) -> ssl.SSLContext:
        """A context that accepts any chain: used only to read what a failing peer presents."""

        def build() -> ssl.SSLContext:
            context = _bare_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context

        return self._cached(("any", tuple(alpn)), build, alpn)

    def _cached(
        self, key: Hashable, build: Callable[[], ssl.SSLContext], alpn: Sequence[str]
    ) -> ssl.SSLContext:
        context = self._contexts.get(key)
        if context is None:
            context = build()
            if alpn:
                context.set_alpn_protocols(list(alpn))
            self._contexts[key] = context
        return context


def _bare_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
