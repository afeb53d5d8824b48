"""The site's HTTP proxy, as configured: where checks with via="proxy" go (CONNECT for TLS,
absolute-form requests for plain HTTP: courierwatch.probe.net.tunnel).

Only a plain HTTP proxy without credentials is modelled, because that is what Apple supports
for APNs: devices reach it through an HTTP proxy set by hand, by MDM or by a PAC file (Apple's
article 101555; older text said PAC did not work), but an authenticated proxy and HTTPS
inspection are not supported, so a proxy that demands credentials is a finding, not something
to configure around. A PAC file names such a proxy; give the proxy it picks for Apple's hosts.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class ProxySettings:
    host: str
    port: int

    @property
    def name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_proxy_url(url: str) -> ProxySettings:
    """http://host:port -> settings; the port is required, as proxies have no standard one."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"must be an http:// proxy URL, got {url!r}")
    if parts.username or parts.password:
        raise ValueError("apsd cannot use an authenticated proxy: leave credentials out")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"must be http://host:port with nothing after it, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ValueError(f"must name the host and port, such as http://proxy:3128, got {url!r}")
    return ProxySettings(parts.hostname, port)
