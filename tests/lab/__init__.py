"""A small lab in network namespaces for end-to-end tests (root only): a fake Apple on its
real ports, sites with their own resolver, path faults and proxy, a real probe per site and a
real collector. See README.md beside this file.

    async with Lab({"a": Site(), "b": Site(block_5223=True)}, tmp_path) as lab:
        samples = await lab.collector_metrics()
"""

from lab.lab import Lab, SiteHandle
from lab.site import Proxy, Site

__all__ = ["Lab", "Proxy", "Site", "SiteHandle"]
