"""What the collector's status page shows for each site, read from the page as served: the
site's state (the snapshot the page embeds for its script) and the colour the page paints it
(the badge class its script gives that state, and the stylesheet's background for the class)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass

import aiohttp

# The page's script names a badge's class so (collector/status.html, badge()); if the page
# changes it, this module must follow, so its absence fails loudly.
BADGE_RULE = 's-" + state.replace(/[^a-z]+/g, "-")'
_INITIAL = re.compile(r'<script id="initial" type="application/json">(.*?)</script>', re.S)
_COLOUR = re.compile(r"\.s-([a-z-]+)\s*\{\s*background:\s*(#[0-9a-fA-F]{3,6})")


@dataclass(frozen=True, slots=True)
class Painted:
    state: str
    colour: str  # the badge's background, as the stylesheet writes it


def painted(page: str) -> dict[str, Painted]:
    """Site -> its state and colour on this page."""
    if BADGE_RULE not in page:
        raise AssertionError(f"the status page no longer names badge classes as {BADGE_RULE}")
    initial = _INITIAL.search(page)
    if initial is None:
        raise AssertionError("the status page embeds no initial snapshot")
    colours = dict(_COLOUR.findall(page))
    out = {}
    for site in json.loads(initial.group(1))["sites"]:
        badge = re.sub(r"[^a-z]+", "-", site["state"])
        if badge not in colours:
            raise AssertionError(f"the status page has no colour for state {site['state']!r}")
        out[site["site"]] = Painted(site["state"], colours[badge])
    return out


def palette(page: str) -> dict[str, str]:
    """Badge class (state with - for _) -> its background."""
    return dict(_COLOUR.findall(page))


async def fetch(http: str) -> str:
    """The status page of the collector at `http` (host:port)."""
    async with aiohttp.ClientSession() as session, session.get(f"http://{http}/") as response:
        assert response.status == 200, response.status
        return await response.text()


async def fetch_until(http: str, site: str, state: str, seconds: float = 10.0) -> str:
    """The status page once it paints `site` as `state`, or the last one fetched after
    `seconds`. The page reads a snapshot made in the background (collector/snapshots.py: up
    to `fresh`, a second, old), so right after /metrics changed it may still show the state
    before."""
    deadline = time.monotonic() + seconds
    while True:  # ends: by the deadline at the latest
        page = await fetch(http)
        shown = painted(page).get(site)
        if (shown is not None and shown.state == state) or time.monotonic() >= deadline:
            return page
        await asyncio.sleep(0.25)
