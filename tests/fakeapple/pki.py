"""TestPKI: a fake "Apple" root CA, an unrelated second CA (untrusted), and an SSL-inspection
CA with an intermediate (named like a well-known inspection product), all written as PEM
files so probe configs can name them as trust anchors."""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

import trustme

# Named like a real SSL-inspection product, so a finding reads like the one a NOC would see.
INSPECTION_ORG = "Fake Zscaler"


class TestPKI:
    """Independent CAs. `ca` is the one tests trust (its PEM is `ca_pem_path`); `other_ca`
    stands in for an unknown signer; `inspection_ca` (PEM `inspection_ca_pem_path`) for a
    TLS-intercepting proxy's root, which signs through `inspection_intermediate` so that its
    chains are longer than a leaf. Without `directory`, PEMs go to a private temp directory
    removed by `close()`."""

    __test__ = False  # the name starts with "Test": keep pytest from collecting it

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fakeapple-pki-")
            directory = self._tmp.name
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # trustme sets O and OU on CAs, not CN, so the recognisable label goes in OU.
        self.ca = trustme.CA(
            organization_name="Fake Apple", organization_unit_name="Fake Apple Root CA"
        )
        self.other_ca = trustme.CA(
            organization_name="Fake Interceptor", organization_unit_name="Fake Interception CA"
        )
        self.inspection_ca = trustme.CA(
            organization_name=INSPECTION_ORG, organization_unit_name=f"{INSPECTION_ORG} Root CA"
        )
        self.inspection_intermediate = trustme.CA(
            parent_cert=self.inspection_ca,
            organization_name=INSPECTION_ORG,
            organization_unit_name=f"{INSPECTION_ORG} Intermediate CA",
        )
        self.ca_pem_path = self.directory / "fake-apple-root-ca.pem"
        self.other_ca_pem_path = self.directory / "fake-interception-ca.pem"
        self.inspection_ca_pem_path = self.directory / "fake-inspection-root-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem_path))
        self.other_ca.cert_pem.write_to_path(str(self.other_ca_pem_path))
        self.inspection_ca.cert_pem.write_to_path(str(self.inspection_ca_pem_path))

    @staticmethod
    def _issue(
        ca: trustme.CA,
        names: tuple[str, ...],
        not_before: datetime.datetime | None,
        not_after: datetime.datetime | None,
    ) -> trustme.LeafCert:
        if not names:
            raise ValueError("a server certificate needs at least one name")
        return ca.issue_cert(
            *names,
            common_name=names[0],
            organization_name="Fake Apple",
            not_before=not_before,
            not_after=not_after,
        )

    def issue(
        self,
        *names: str,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> trustme.LeafCert:
        """Server cert from the trusted CA; CN is the first name, SANs are all of them."""
        return self._issue(self.ca, names, not_before, not_after)

    def issue_untrusted(
        self,
        *names: str,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> trustme.LeafCert:
        """Server cert from `other_ca`, which clients trusting `ca_pem_path` reject."""
        return self._issue(self.other_ca, names, not_before, not_after)

    def issue_inspected(self, *names: str) -> trustme.LeafCert:
        """What an inspection proxy presents for `names`: a leaf from its intermediate, sent
        with the intermediate (the chain's issuers all name INSPECTION_ORG)."""
        return self._issue(self.inspection_intermediate, names, None, None)

    def client_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        """A verifying client context that trusts only `ca`."""
        context = ssl.create_default_context(cafile=str(self.ca_pem_path))
        if alpn:
            context.set_alpn_protocols(alpn)
        return context

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
