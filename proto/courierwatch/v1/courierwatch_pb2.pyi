import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_OK: _ClassVar[Outcome]
    OUTCOME_DNS_NXDOMAIN: _ClassVar[Outcome]
    OUTCOME_DNS_TIMEOUT: _ClassVar[Outcome]
    OUTCOME_DNS_SERVFAIL: _ClassVar[Outcome]
    OUTCOME_DNS_NO_ADDRESS: _ClassVar[Outcome]
    OUTCOME_REFUSED: _ClassVar[Outcome]
    OUTCOME_TIMEOUT: _ClassVar[Outcome]
    OUTCOME_UNREACHABLE: _ClassVar[Outcome]
    OUTCOME_RESET: _ClassVar[Outcome]
    OUTCOME_TLS_UNTRUSTED: _ClassVar[Outcome]
    OUTCOME_TLS_HANDSHAKE_FAILED: _ClassVar[Outcome]
    OUTCOME_TLS_NAME_MISMATCH: _ClassVar[Outcome]
    OUTCOME_HTTP_BAD_STATUS: _ClassVar[Outcome]
    OUTCOME_PROTOCOL_ERROR: _ClassVar[Outcome]
    OUTCOME_ERROR: _ClassVar[Outcome]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_OK: Outcome
OUTCOME_DNS_NXDOMAIN: Outcome
OUTCOME_DNS_TIMEOUT: Outcome
OUTCOME_DNS_SERVFAIL: Outcome
OUTCOME_DNS_NO_ADDRESS: Outcome
OUTCOME_REFUSED: Outcome
OUTCOME_TIMEOUT: Outcome
OUTCOME_UNREACHABLE: Outcome
OUTCOME_RESET: Outcome
OUTCOME_TLS_UNTRUSTED: Outcome
OUTCOME_TLS_HANDSHAKE_FAILED: Outcome
OUTCOME_TLS_NAME_MISMATCH: Outcome
OUTCOME_HTTP_BAD_STATUS: Outcome
OUTCOME_PROTOCOL_ERROR: Outcome
OUTCOME_ERROR: Outcome

class ProbeMessage(_message.Message):
    __slots__ = ("hello", "batch")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    batch: ResultBatch
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., batch: _Optional[_Union[ResultBatch, _Mapping]] = ...) -> None: ...

class CollectorMessage(_message.Message):
    __slots__ = ("welcome", "ack")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    ack: Ack
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("probe_id", "site", "software_version", "config_digest")
    PROBE_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    probe_id: str
    site: str
    software_version: str
    config_digest: str
    def __init__(self, probe_id: _Optional[str] = ..., site: _Optional[str] = ..., software_version: _Optional[str] = ..., config_digest: _Optional[str] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("applied_through_seq",)
    APPLIED_THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    applied_through_seq: int
    def __init__(self, applied_through_seq: _Optional[int] = ...) -> None: ...

class ResultBatch(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Result]
    def __init__(self, results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("through_seq",)
    THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    through_seq: int
    def __init__(self, through_seq: _Optional[int] = ...) -> None: ...

class Phases(_message.Message):
    __slots__ = ("dns", "connect", "tls", "first_byte", "total")
    DNS_FIELD_NUMBER: _ClassVar[int]
    CONNECT_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    FIRST_BYTE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    dns: float
    connect: float
    tls: float
    first_byte: float
    total: float
    def __init__(self, dns: _Optional[float] = ..., connect: _Optional[float] = ..., tls: _Optional[float] = ..., first_byte: _Optional[float] = ..., total: _Optional[float] = ...) -> None: ...

class TlsFacts(_message.Message):
    __slots__ = ("version", "alpn", "leaf_subject", "issuer", "not_after", "verified")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALPN_FIELD_NUMBER: _ClassVar[int]
    LEAF_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    version: str
    alpn: str
    leaf_subject: str
    issuer: str
    not_after: _timestamp_pb2.Timestamp
    verified: bool
    def __init__(self, version: _Optional[str] = ..., alpn: _Optional[str] = ..., leaf_subject: _Optional[str] = ..., issuer: _Optional[str] = ..., not_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., verified: _Optional[bool] = ...) -> None: ...

class HttpFacts(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: int
    def __init__(self, status: _Optional[int] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("seq", "target", "port", "check", "group", "outcome", "started_at", "phases", "addresses", "peer_address", "cname_chain", "tls", "http", "detail", "interval_seconds")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    PEER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CNAME_CHAIN_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    target: str
    port: int
    check: str
    group: str
    outcome: Outcome
    started_at: _timestamp_pb2.Timestamp
    phases: Phases
    addresses: _containers.RepeatedScalarFieldContainer[str]
    peer_address: str
    cname_chain: _containers.RepeatedScalarFieldContainer[str]
    tls: TlsFacts
    http: HttpFacts
    detail: str
    interval_seconds: float
    def __init__(self, seq: _Optional[int] = ..., target: _Optional[str] = ..., port: _Optional[int] = ..., check: _Optional[str] = ..., group: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., phases: _Optional[_Union[Phases, _Mapping]] = ..., addresses: _Optional[_Iterable[str]] = ..., peer_address: _Optional[str] = ..., cname_chain: _Optional[_Iterable[str]] = ..., tls: _Optional[_Union[TlsFacts, _Mapping]] = ..., http: _Optional[_Union[HttpFacts, _Mapping]] = ..., detail: _Optional[str] = ..., interval_seconds: _Optional[float] = ...) -> None: ...
