"""A Python that runs this venv's interpreter on a newer OpenSSL: Debian 13's (trixie), which is
what Raspberry Pi OS (trixie-based) gives a probe, against this machine's Debian 12 OpenSSL 3.0.

    python tests/bench/newer_openssl.py /tmp/ossl       # prints /tmp/ossl/python
    python tests/bench/probe_footprint.py --quick --probe-python /tmp/ossl/python

It fetches three packages of Debian 13 from deb.debian.org (libssl3t64, and the libc6 and
libzstd1 it needs: its libcrypto wants glibc 2.38, Debian 12 has 2.36), unpacks them into the
folder, and writes `python` there: the interpreter started by Debian 13's dynamic loader with
those libraries first. Nothing is installed on the machine. The interpreter and its
extensions are the same files; only libssl, libcrypto and the C library differ, so the probe
measured with it differs from the usual one by its OpenSSL alone (the standard library's ssl
module; gRPC has its own BoringSSL).
"""

from __future__ import annotations

import argparse
import lzma
import shlex
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import harness

MIRROR = "http://deb.debian.org/debian"
SUITE = "trixie"
PACKAGES = ("libssl3t64", "libc6", "libzstd1")
ARCH = "amd64"
LIBS = "usr/lib/x86_64-linux-gnu"


def filenames(index: str) -> dict[str, str]:
    """Package name to its file in the pool, from a Packages index."""
    found: dict[str, str] = {}
    for stanza in index.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
        if fields.get("Package") in PACKAGES:
            found[fields["Package"]] = fields["Filename"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    folder = parser.parse_args().folder.resolve()
    root = folder / "root"
    root.mkdir(parents=True, exist_ok=True)
    url = f"{MIRROR}/dists/{SUITE}/main/binary-{ARCH}/Packages.xz"
    with urllib.request.urlopen(url, timeout=120) as response:
        pool = filenames(lzma.decompress(response.read()).decode())
    missing = set(PACKAGES) - set(pool)
    if missing:
        sys.exit(f"{url}: no {', '.join(sorted(missing))}")
    for name in PACKAGES:
        deb = folder / Path(pool[name]).name
        if not deb.exists():
            urllib.request.urlretrieve(f"{MIRROR}/{pool[name]}", deb)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    libs = root / LIBS
    # Debian 13's first; then the interpreter's own libpython (a shared build), before this
    # machine's older one of the same name; then this machine's for the rest.
    path = ":".join([str(libs), sysconfig.get_config_var("LIBDIR"), f"/{LIBS}",
                     "/lib/x86_64-linux-gnu"])
    wrapper = folder / "python"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec {shlex.quote(str(libs / 'ld-linux-x86-64.so.2'))} --library-path "
        f"{shlex.quote(path)} {shlex.quote(sys.executable)} \"$@\"\n"
    )
    wrapper.chmod(0o755)
    print(f"{wrapper}: {harness.openssl(str(wrapper))}")


if __name__ == "__main__":
    main()
