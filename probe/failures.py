"""Outcomes of a check that did not work: the CheckFailure a step raises, and `classify`, which
turns any other error into one of the contract's failure classes. Both the network layer
(courierwatch.probe.net) and the checks use this room; it uses neither."""

from __future__ import annotations

import errno
import ssl

from courierwatch.v1 import courierwatch_pb2 as pb


class CheckFailure(Exception):
    """The endpoint answered, but not in a way that works; carries the outcome to report."""

    def __init__(self, outcome: pb.Outcome.ValueType, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


# X509_V_ERR_HOSTNAME_MISMATCH: the chain is fine but names another host.
HOSTNAME_MISMATCH = 62

_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


def classify(error: BaseException) -> tuple[pb.Outcome.ValueType, str]:
    """The outcome and a short reason for an exception a check let escape."""
    if isinstance(error, ssl.SSLCertVerificationError):
        if error.verify_code == HOSTNAME_MISMATCH:
            return pb.OUTCOME_TLS_NAME_MISMATCH, error.verify_message
        return pb.OUTCOME_TLS_UNTRUSTED, error.verify_message or str(error)
    if isinstance(error, ssl.SSLError):
        return pb.OUTCOME_TLS_HANDSHAKE_FAILED, error.reason or str(error)
    if isinstance(error, ConnectionRefusedError):
        return pb.OUTCOME_REFUSED, "connection refused"
    if isinstance(error, ConnectionResetError | BrokenPipeError):
        return pb.OUTCOME_RESET, "connection reset by peer"
    if isinstance(error, TimeoutError):
        return pb.OUTCOME_TIMEOUT, "no answer in time"
    if isinstance(error, OSError) and error.errno in _UNREACHABLE:
        return pb.OUTCOME_UNREACHABLE, error.strerror or str(error)
    if isinstance(error, EOFError | ConnectionError):
        return pb.OUTCOME_RESET, "connection closed by peer"
    return pb.OUTCOME_ERROR, f"{type(error).__name__}: {error}"
