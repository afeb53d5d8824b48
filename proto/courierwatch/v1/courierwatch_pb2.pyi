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
    OUTCOME_DNS_SINKHOLE: _ClassVar[Outcome]
    OUTCOME_DNS_HIJACK: _ClassVar[Outcome]
    OUTCOME_TLS_INTERCEPTED: _ClassVar[Outcome]
    OUTCOME_TLS_ALPN_MISMATCH: _ClassVar[Outcome]
    OUTCOME_PROXY_DENIED: _ClassVar[Outcome]
    OUTCOME_PROXY_AUTH_REQUIRED: _ClassVar[Outcome]
    OUTCOME_DNS_UNREACHABLE: _ClassVar[Outcome]
    OUTCOME_DNS_REFUSED: _ClassVar[Outcome]
    OUTCOME_CLOCK_SKEW: _ClassVar[Outcome]
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
OUTCOME_DNS_SINKHOLE: Outcome
OUTCOME_DNS_HIJACK: Outcome
OUTCOME_TLS_INTERCEPTED: Outcome
OUTCOME_TLS_ALPN_MISMATCH: Outcome
OUTCOME_PROXY_DENIED: Outcome
OUTCOME_PROXY_AUTH_REQUIRED: Outcome
OUTCOME_DNS_UNREACHABLE: Outcome
OUTCOME_DNS_REFUSED: Outcome
OUTCOME_CLOCK_SKEW: Outcome

class ProbeMessage(_message.Message):
    __slots__ = ("hello", "batch", "health")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    batch: ResultBatch
    health: Health
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., batch: _Optional[_Union[ResultBatch, _Mapping]] = ..., health: _Optional[_Union[Health, _Mapping]] = ...) -> None: ...

class CollectorMessage(_message.Message):
    __slots__ = ("welcome", "ack", "busy")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    ack: Ack
    busy: Busy
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., busy: _Optional[_Union[Busy, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("probe_id", "site", "software_version", "config_digest", "groups", "families", "families_reason", "ack_timeout_seconds")
    PROBE_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    FAMILIES_FIELD_NUMBER: _ClassVar[int]
    FAMILIES_REASON_FIELD_NUMBER: _ClassVar[int]
    ACK_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    probe_id: str
    site: str
    software_version: str
    config_digest: str
    groups: _containers.RepeatedCompositeFieldContainer[GroupInfo]
    families: _containers.RepeatedScalarFieldContainer[str]
    families_reason: str
    ack_timeout_seconds: float
    def __init__(self, probe_id: _Optional[str] = ..., site: _Optional[str] = ..., software_version: _Optional[str] = ..., config_digest: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[GroupInfo, _Mapping]]] = ..., families: _Optional[_Iterable[str]] = ..., families_reason: _Optional[str] = ..., ack_timeout_seconds: _Optional[float] = ...) -> None: ...

class GroupInfo(_message.Message):
    __slots__ = ("id", "title", "critical")
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    critical: bool
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., critical: _Optional[bool] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("applied_through_seq", "max_batch", "max_message_bytes", "max_string_bytes", "idle_timeout_seconds")
    APPLIED_THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_STRING_BYTES_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    applied_through_seq: int
    max_batch: int
    max_message_bytes: int
    max_string_bytes: int
    idle_timeout_seconds: float
    def __init__(self, applied_through_seq: _Optional[int] = ..., max_batch: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_string_bytes: _Optional[int] = ..., idle_timeout_seconds: _Optional[float] = ...) -> None: ...

class Health(_message.Message):
    __slots__ = ("spool_depth", "spool_bytes", "dropped_total", "loop_lag_seconds", "oldest_pending_seconds", "quarantined_total", "dropped_disk_full_total", "sent_at", "collectors_silent_total")
    SPOOL_DEPTH_FIELD_NUMBER: _ClassVar[int]
    SPOOL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    LOOP_LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OLDEST_PENDING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DROPPED_DISK_FULL_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    COLLECTORS_SILENT_TOTAL_FIELD_NUMBER: _ClassVar[int]
    spool_depth: int
    spool_bytes: int
    dropped_total: int
    loop_lag_seconds: float
    oldest_pending_seconds: float
    quarantined_total: int
    dropped_disk_full_total: int
    sent_at: _timestamp_pb2.Timestamp
    collectors_silent_total: int
    def __init__(self, spool_depth: _Optional[int] = ..., spool_bytes: _Optional[int] = ..., dropped_total: _Optional[int] = ..., loop_lag_seconds: _Optional[float] = ..., oldest_pending_seconds: _Optional[float] = ..., quarantined_total: _Optional[int] = ..., dropped_disk_full_total: _Optional[int] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., collectors_silent_total: _Optional[int] = ...) -> None: ...

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

class Busy(_message.Message):
    __slots__ = ("held_seconds",)
    HELD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    held_seconds: float
    def __init__(self, held_seconds: _Optional[float] = ...) -> None: ...

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
    __slots__ = ("version", "alpn", "leaf_subject", "issuer", "not_after", "verified", "chain_subjects", "verified_by")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALPN_FIELD_NUMBER: _ClassVar[int]
    LEAF_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    CHAIN_SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_BY_FIELD_NUMBER: _ClassVar[int]
    version: str
    alpn: str
    leaf_subject: str
    issuer: str
    not_after: _timestamp_pb2.Timestamp
    verified: bool
    chain_subjects: _containers.RepeatedScalarFieldContainer[str]
    verified_by: str
    def __init__(self, version: _Optional[str] = ..., alpn: _Optional[str] = ..., leaf_subject: _Optional[str] = ..., issuer: _Optional[str] = ..., not_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., verified: _Optional[bool] = ..., chain_subjects: _Optional[_Iterable[str]] = ..., verified_by: _Optional[str] = ...) -> None: ...

class NtpFacts(_message.Message):
    __slots__ = ("offset_seconds", "stratum")
    OFFSET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STRATUM_FIELD_NUMBER: _ClassVar[int]
    offset_seconds: float
    stratum: int
    def __init__(self, offset_seconds: _Optional[float] = ..., stratum: _Optional[int] = ...) -> None: ...

class HttpFacts(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: int
    def __init__(self, status: _Optional[int] = ...) -> None: ...

class DnsClientFacts(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[GroupQueries]
    def __init__(self, groups: _Optional[_Iterable[_Union[GroupQueries, _Mapping]]] = ...) -> None: ...

class GroupQueries(_message.Message):
    __slots__ = ("group", "queries", "blocked")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    group: str
    queries: int
    blocked: int
    def __init__(self, group: _Optional[str] = ..., queries: _Optional[int] = ..., blocked: _Optional[int] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("seq", "target", "port", "check", "group", "outcome", "started_at", "phases", "addresses", "peer_address", "cname_chain", "tls", "http", "detail", "interval_seconds", "pop", "address_family", "via", "dialled_host", "ntp", "dns_clients")
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
    POP_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FAMILY_FIELD_NUMBER: _ClassVar[int]
    VIA_FIELD_NUMBER: _ClassVar[int]
    DIALLED_HOST_FIELD_NUMBER: _ClassVar[int]
    NTP_FIELD_NUMBER: _ClassVar[int]
    DNS_CLIENTS_FIELD_NUMBER: _ClassVar[int]
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
    pop: str
    address_family: str
    via: str
    dialled_host: str
    ntp: NtpFacts
    dns_clients: DnsClientFacts
    def __init__(self, seq: _Optional[int] = ..., target: _Optional[str] = ..., port: _Optional[int] = ..., check: _Optional[str] = ..., group: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., phases: _Optional[_Union[Phases, _Mapping]] = ..., addresses: _Optional[_Iterable[str]] = ..., peer_address: _Optional[str] = ..., cname_chain: _Optional[_Iterable[str]] = ..., tls: _Optional[_Union[TlsFacts, _Mapping]] = ..., http: _Optional[_Union[HttpFacts, _Mapping]] = ..., detail: _Optional[str] = ..., interval_seconds: _Optional[float] = ..., pop: _Optional[str] = ..., address_family: _Optional[str] = ..., via: _Optional[str] = ..., dialled_host: _Optional[str] = ..., ntp: _Optional[_Union[NtpFacts, _Mapping]] = ..., dns_clients: _Optional[_Union[DnsClientFacts, _Mapping]] = ...) -> None: ...
