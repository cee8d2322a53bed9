"""One settings object for the whole server, documented field by field.

Settings come, in rising precedence, from the defaults below, a TOML file (``--config`` or
``$CALLREC_CONFIG``; keys are the field names, optionally under a ``[callrec]`` table) and
environment variables ``CALLREC_<FIELD>`` (upper case). ``callrec config show`` prints the
effective values and where each came from.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callrec.exceptions import ConfigError
from callrec.filemodes import parse_mode

#: Values of ``sync_mode`` (the same as :data:`callrec.engine.durability.MODES`, which the
#: settings do not import: the engine package is heavy).
SYNC_MODES = ("syncfs", "fdatasync", "off")

DEFAULT_FILENAME_TEMPLATE = (
    "{start:%Y-%m-%d}/{dir}_{local_number}_{remote_number}_{device}_{start:%Y-%m-%d_%H_%M_%S}.wav"
)


def _doc(text: str, default: Any) -> Any:
    return field(default=default, metadata={"doc": text})


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Effective configuration of a callrec server."""

    control_host: str = _doc(
        'Address the TCP control listener binds to. "::" is dual stack: IPv6 and IPv4 phones.',
        "0.0.0.0",
    )
    control_port: int = _doc("TCP port phones send RecordStart/StopRequest to.", 10000)
    media_host: str = _doc(
        'Address the per-session UDP media sockets bind to. "::" is dual stack.', "0.0.0.0"
    )
    media_port_min: int = _doc("Lowest UDP port handed to a session (inclusive).", 41000)
    media_port_max: int = _doc("Highest UDP port handed to a session (inclusive).", 42999)
    advertised_address: str = _doc(
        "Address put in server= of the start answer (behind NAT). Empty: the local address "
        "of the phone's TCP connection.",
        "",
    )
    recordings_dir: Path = _doc("Directory recordings are written under.", Path("recordings"))
    database_url: str = _doc(
        "SQLAlchemy URL of the catalogue (SQLite file or postgresql+psycopg://...).",
        "sqlite:///callrec.db",
    )
    node_name: str = _doc(
        "This node's name when several `callrec serve` share one PostgreSQL catalogue "
        "(docs/scaling.md): stored on each recording it makes, shown in the list and on the "
        "live page, and naming its journal and job claims. Letters, digits, '.', '_', '-' "
        "(1-63). Empty: the host name.",
        "",
    )
    peer_recordings_dirs: tuple[str, ...] = _doc(
        "Until object storage holds the audio: where this node reads other nodes' "
        'recordings, as node=directory (e.g. ["b=/mnt/node-b/recordings"], a read-only '
        "network mount). A recording of a node not listed cannot be played here (the "
        "answer says on which node it is).",
        (),
    )
    file_mode: str = _doc(
        "Permission bits (octal) of the recordings, sidecars, exports and SQLite catalogue "
        "callrec creates, whatever the umask; folders get the matching search bits (0640: "
        "0750). Journals, locks and secrets are always 0600. Must keep the owner's read "
        "and write, must not let every user write.",
        "0640",
    )
    file_group: str = _doc(
        "Group (name or number) the files and folders callrec creates are given, e.g. the "
        "group of a backup user (file_mode 0640 lets it read). Empty: the process's own "
        "group. The process must be a member of it.",
        "",
    )
    filename_template: str = _doc(
        "Path of a recording under recordings_dir. Fields: dir, local_number, remote_number, "
        "local_name, remote_name, device, codec, id, node (node_name), start (a datetime, "
        "format with {start:%Y...}). Phone-supplied text is sanitised; the result never leaves "
        "recordings_dir.",
        DEFAULT_FILENAME_TEMPLATE,
    )
    accept_foreign_media: bool = _doc(
        "Accept RTP from addresses other than the control peer's IP (counted either way); "
        "also turns media latching off.",
        False,
    )
    media_latch: bool = _doc(
        "Let the kernel filter each call's RTP: its socket takes only the phone's address from "
        "the start, and only the phone's address and port once the first packet of the call "
        "is recorded (connect()), so a flood from elsewhere never reaches the call's queue.",
        True,
    )
    media_relatch_after: float = _doc(
        "Seconds without recorded RTP from the latched port after which the socket takes any "
        "port of the phone's address again (NAT rebinding, a phone re-creating its RTP "
        "socket); the next recorded packet latches it anew.",
        1.0,
    )
    media_port_quarantine: float = _doc(
        "Seconds a media port rests after its call before it is handed out again (phones may "
        "stream on after a call or a server restart); remembered across restarts and crashes "
        "under recordings_dir/.callrec/ports. When every free port rests, the one that rested "
        "longest is used. 0: no rest.",
        3600.0,
    )
    reorder_window: int = _doc("Packets held back to repair reordering before they are written.", 5)
    max_gap_seconds: float = _doc(
        "Longest silence one gap in the RTP timeline can insert (guards timestamp jumps).",
        600.0,
    )
    workers: int = _doc(
        "Recording processes: the main one and workers - 1 media workers, each with its "
        "slice of the media port range (per-process limits: max_sessions and "
        "max_sessions_per_device apply to each).",
        1,
    )
    media_rcvbuf: int = _doc(
        "Receive buffer of each media socket, in bytes: holds a burst of RTP (a phone "
        "flushing its jitter buffer) until it is read. The kernel caps it at "
        "net.core.rmem_max unless callrec runs as root (packaging/systemd/sysctl.conf "
        "raises it); what overflows is counted as packets_kernel_dropped.",
        1024 * 1024,
    )
    media_read_interval: float = _doc(
        "Seconds between batched reads of all media sockets (the kernel buffers meanwhile).",
        0.02,
    )
    sync_interval: float = _doc(
        "Seconds between writes of buffered audio and a valid WAV header, each followed by a "
        "sync (sync_mode): about what a crash or a power cut can lose.",
        0.5,
    )
    sync_mode: str = _doc(
        "How each interval's audio is put on the disk: syncfs (one syncfs of the recordings' "
        "filesystem; fdatasync where there is none), fdatasync (each file written), off (the "
        "kernel's write-back: a power cut can lose up to about 35 s).",
        "syncfs",
    )
    message_idle: float = _doc(
        "Seconds of quiet after which an unterminated control message is taken as complete.",
        0.03,
    )
    max_message_bytes: int = _doc("Largest control message accepted, in bytes.", 8192)
    connection_idle_timeout: float = _doc(
        "Seconds a control connection with no active session may stay open silent.", 30.0
    )
    max_sessions: int = _doc(
        "Most calls recorded at once, phone sessions and SIP calls together (more answer busy; "
        "SIP's Record: on gets 503).",
        5000,
    )
    max_sessions_per_device: int = _doc(
        "Most calls one device (MAC; for SIP the phone's MAC or account) may record at once "
        "(more answer busy).",
        16,
    )
    max_connections: int = _doc(
        "Most open control connections; more are closed at once (guards descriptor use).", 10000
    )
    max_bad_requests: int = _doc(
        "Refused messages in a row after which a control connection holding no call is "
        "closed (one holding a call is never closed for bad input).",
        5,
    )
    close_after_stop: float = _doc(
        "Seconds after the last stop on a control connection is answered before the server "
        "closes it, unless the phone sends more (phones close it themselves; this frees what "
        "they leave open).",
        1.0,
    )
    disk_reserve_bytes: int = _doc(
        "Free space under recordings_dir below which new recordings (calls, SIP, imports) are "
        "refused with disk_full.",
        100 * 1024 * 1024,
    )
    disk_reserve_percent: float = _doc(
        "Free space, in percent of the filesystem, below which new recordings are refused "
        "with disk_full.",
        1.0,
    )
    max_duration: float = _doc(
        "Longest recording (phone session or SIP segment) in seconds; then it is closed with "
        "reason max_duration. 0: no limit.",
        6 * 3600.0,
    )
    rtp_timeout: float = _doc(
        "Seconds without RTP from the phone (counted from the start answer when none came) "
        "after which a phone session ends with reason rtp_timeout and frees its port; as "
        "rtpengine's default. 0: never.",
        60.0,
    )
    # -- who may connect: allow-lists and per-source limits (issue 14) --
    control_allow: tuple[str, ...] = _doc(
        "Networks (CIDR) or addresses phones may use the control port from, e.g. "
        '["10.20.0.0/16"] (environment: comma-separated). Others are answered '
        "failed/forbidden and closed. Empty: every address. Set it to the phones' VLAN: the "
        "control port hands out media ports and starts recordings.",
        (),
    )
    control_allow_devices: tuple[str, ...] = _doc(
        "MAC addresses (any common spelling) of the phones allowed to record: a start whose "
        "device= is not listed is answered failed/forbidden. Empty: every device. A MAC is "
        "no secret (it is on the phone's label); combine it with control_allow.",
        (),
    )
    sip_allow: tuple[str, ...] = _doc(
        "Networks (CIDR) or addresses SIP requests are taken from (UDP and TCP); others get "
        "403. Empty: every address. The sip_upstream server and sip_trusted_peers are always "
        "allowed.",
        (),
    )
    web_allow: tuple[str, ...] = _doc(
        "Networks (CIDR) or addresses the web UI and API answer (the socket's peer: behind a "
        "reverse proxy, list the proxy); others get 403. Empty: every address.",
        (),
    )
    max_connections_per_source: int = _doc(
        "Most open control connections from one address; more are closed at once, so one "
        "host cannot take max_connections from every phone (raise it for many phones behind "
        "one NAT address, and for load tests from one address). Per process with workers > 1.",
        64,
    )
    max_sessions_per_connection: int = _doc(
        "Most sessions open at once on one control connection (phones use one per call); "
        "more are answered failed/too_many_sessions, so one connection cannot hold every "
        "media port.",
        4,
    )
    log_level: str = _doc("Logging level: DEBUG, INFO, WARNING, ERROR.", "INFO")
    # -- phone-local (USB) files settings (issue 3) --
    usb_import_dir: str = _doc(
        "Folder under recordings_dir that imported phone-local (USB) files go to: a playable "
        "WAV per file in <date>/, the phone's original beside it as <name>.orig.",
        "usb",
    )
    usb_import_max_bytes: int = _doc(
        "Largest phone-local file `callrec file import` and the web upload accept, in bytes "
        "(256 MiB: about 9 hours of G.711 or G.722).",
        256 * 1024 * 1024,
    )
    # -- web settings (issue 4) --
    web_enabled: bool = _doc("Run the web UI and REST API inside `callrec serve`.", True)
    web_host: str = _doc("Address the web UI / REST API listens on.", "0.0.0.0")
    web_port: int = _doc("TCP port of the web UI / REST API (0: any free port).", 8080)
    web_session_hours: float = _doc(
        "Hours a browser sign-in stays valid without use (sliding; the cookie is HttpOnly).", 12.0
    )
    web_metrics_public: bool = _doc(
        "Serve /metrics without authentication (for a Prometheus scraper); else an admin "
        "token or session is needed.",
        True,
    )
    web_zip_max_files: int = _doc("Most recordings one ZIP bulk download may hold.", 1000)
    web_token_max_days: float = _doc(
        "Longest life of an API token, in days, wherever it is made (account page, API, "
        "`callrec user token`); a longer one asked for is cut to it. 0: no maximum, and then "
        "tokens that never expire can be made from the account page (with the password) or "
        "the CLI, never with another token.",
        0.0,
    )
    web_listen_max_per_user: int = _doc(
        "Most calls one user may listen to live at once (browser tabs and API clients "
        "together); one more is refused (WebSocket close 4429).",
        8,
    )
    web_tls_cert: str = _doc(
        "PEM certificate (with its chain) the web UI serves HTTPS with; needs web_tls_key. "
        "Empty: plain HTTP (or web_tls_self_signed).",
        "",
    )
    web_tls_key: str = _doc("PEM private key of web_tls_cert.", "")
    web_tls_self_signed: bool = _doc(
        "Serve HTTPS with a self-signed certificate callrec makes once and keeps under "
        "<recordings_dir>/.callrec/tls/ (its SHA-256 fingerprint is logged at each start); "
        "ignored when web_tls_cert is set.",
        False,
    )
    web_trust_proxy: bool = _doc(
        "Take the client address and scheme from X-Forwarded-For/-Proto (behind a reverse "
        "proxy only).",
        False,
    )
    # -- sip settings (issue 6) --
    sip_enabled: bool = _doc(
        "Run the SIP B2BUA (registrar, or outbound proxy with sip_upstream) in `callrec serve`.",
        True,
    )
    sip_host: str = _doc("Address the SIP listeners (UDP and TCP) bind to.", "0.0.0.0")
    sip_port: int = _doc("SIP port, UDP and TCP (0: any free port).", 5060)
    sip_tcp: bool = _doc("Also take SIP over TCP on sip_port.", True)
    sip_advertised_address: str = _doc(
        "Address put in Via, Contact and SDP (behind NAT). Empty: the local address that "
        "reaches each peer.",
        "",
    )
    sip_realm: str = _doc(
        "Digest realm of the registrar; account passwords are stored hashed for it.", "callrec"
    )
    sip_upstream: str = _doc(
        "HOST:PORT of an existing SIP server callrec fronts as outbound proxy: registrations "
        "and calls are relayed there. Empty: callrec is the registrar.",
        "",
    )
    sip_default_policy: str = _doc(
        "Recording policy of a party without a SIP account: never, on_demand or always.",
        "on_demand",
    )
    sip_min_expires: int = _doc("Shortest registration accepted, in seconds (else 423).", 60)
    sip_max_expires: int = _doc("Longest registration granted, in seconds.", 3600)
    sip_account_refresh: float = _doc(
        "Seconds between re-reads of the SIP accounts from the catalogue.", 5.0
    )
    # -- issue 19: trunks by address, TCP idle timeout, per-source limits --
    sip_trusted_peers: tuple[str, ...] = _doc(
        "Networks (CIDR) or addresses of SIP trunks and SBCs trusted by address: in registrar "
        "mode their INVITEs are not challenged and are taken as calls from outside (direction "
        "in); in outbound-proxy mode they may call the phones like sip_upstream. They are "
        "always allowed (sip_allow) and not rate-limited.",
        (),
    )
    sip_tcp_idle_timeout: float = _doc(
        "Seconds a SIP/TCP connection may go without a complete message before it is closed "
        "(a connection a registered phone or a call uses stays open; a partial message held "
        "this long closes any connection).",
        30.0,
    )
    sip_max_connections_per_source: int = _doc(
        "Most open SIP/TCP connections from one address; more are closed at once (0: no "
        "limit). sip_upstream and sip_trusted_peers are not limited.",
        32,
    )
    sip_max_requests_per_source: int = _doc(
        "Most SIP requests per second from one address (UDP and TCP); more are answered 503 "
        "with Retry-After (over UDP once a second, the rest dropped). 0: no limit. "
        "sip_upstream and sip_trusted_peers are not limited; raise it for many phones behind "
        "one NAT address and for load tests (SIPp) from one address.",
        50,
    )
    # -- part J of issue 16: the job runner, webhooks, on_complete_command --
    jobs_enabled: bool = _doc(
        "Run the job runner (webhooks, on_complete_command, periodic work) in `callrec serve`.",
        True,
    )
    job_poll_interval: float = _doc(
        "Seconds between looks for due jobs (jobs enqueued by this process start at once).",
        2.0,
    )
    job_keep_days: float = _doc(
        "Days a finished job and its history are kept (dead jobs stay until retried).", 30.0
    )
    job_catch_up_hours: float = _doc(
        "At start, recordings finished this far back without their completion job (the "
        "runner was down) get it.",
        168.0,
    )
    webhook_url: tuple[str, ...] = _doc(
        "URLs (http or https) that get a signed POST for each recording.completed, "
        ".deleted and .held event. Empty: no webhooks.",
        (),
    )
    webhook_secret: str = _doc(
        "Secret of the Callrec-Signature HMAC-SHA256 header; needed with webhook_url.", ""
    )
    webhook_timeout: float = _doc(
        "Seconds a webhook endpoint has to answer one delivery before it is retried.", 10.0
    )
    webhook_retry_hours: float = _doc(
        "Hours a webhook delivery is retried (with back-off) before it is dead.", 24.0
    )
    web_public_url: str = _doc(
        "Base URL of the web UI as others reach it (https://rec.example.com), for the "
        "download links of webhooks. Empty: made from web_host and web_port.",
        "",
    )
    on_complete_command: str = _doc(
        "Program (and arguments, split like a shell would, but run without one) run after "
        "each recording, with its fields in CALLREC_* environment variables. Empty: none.",
        "",
    )
    on_complete_timeout: float = _doc(
        "Seconds on_complete_command may run before it is killed (and retried).", 60.0
    )
    # -- tamper evidence (issue 16 part 5, docs/integrity.md) --
    integrity_key_file: str = _doc(
        "PEM file of the installation's Ed25519 private key that signs the recordings' hash "
        "chain. Empty: <recordings_dir>/.callrec/integrity/signing-key.pem, made at the first "
        "start (mode 0600).",
        "",
    )
    integrity_sign_interval: float = _doc(
        "Seconds between two signatures of the hash chain's head (also signed at a clean "
        "stop); 0: only at a clean stop.",
        3600.0,
    )
    # -- issue 16 part 4: archive formats --
    archive_format: str = _doc(
        'Transcode finished recordings to this format after archive_after_days: "flac" '
        '(lossless, about half the size) or "opus" (speech at archive_opus_bitrate). Empty: '
        "recordings stay WAV. The WAV is removed only once the copy is verified "
        "(docs/archive.md).",
        "",
    )
    archive_after_days: float = _doc(
        "Age (days since the recording ended) at which archive_format applies.", 30.0
    )
    archive_opus_bitrate: int = _doc(
        "Opus bit rate per channel, bits/s, for archive_format = opus (16000-24000 suits "
        "telephone speech: 7-11 MB per hour of a mono call).",
        20000,
    )
    archive_interval: float = _doc(
        "Seconds between archive sweeps inside `callrec serve` (when archive_format is set).",
        3600.0,
    )
    # -- retention, disk quota and legal hold (issue 16, part R; docs/retention.md) --
    retention_days: int = _doc(
        "Days a recording is kept when no retention rule matches it; then `serve` deletes it "
        "in its daily sweep (file, companions, sidecar; a tombstone stays). 0: forever. "
        "Recordings under legal hold are never deleted.",
        0,
    )
    retention_rules: tuple[str, ...] = _doc(
        "Retention overrides, each kind=value:days with kind source (phone, sip, usb), "
        "extension (local or remote number), device (MAC) or tag, days 0 meaning forever; "
        'e.g. ["extension=3001:3650", "tag=complaint:2555"], or TOML tables '
        '[[retention_rules]] extension = "3001" days = 3650. A recording is kept for the '
        "longest retention among the rules that match it (a rule never shortens another); "
        "retention_days applies when none matches.",
        (),
    )
    disk_quota: str = _doc(
        "Most space the catalogued recordings may take: bytes (500GB, 2TiB, 1000000000) or a "
        'percent of the recordings\' filesystem ("80%"). Past it, `serve` deletes the '
        "oldest recordings (never a held one or one being recorded) until it is met; from 90% "
        "of it a warning is logged and shown by /health and /metrics. Empty: no quota.",
        "",
    )

    # -- transcription (issue 18; docs/transcription.md) --
    transcribe_engine: str = _doc(
        'Speech-to-text engine: "pocketsphinx" (embedded, its en-US model ships with it) or '
        "\"faster-whisper\" (better; pip install 'callrec[whisper]' and a model in "
        "transcribe_model_dir).",
        "pocketsphinx",
    )
    transcribe_model_dir: str = _doc(
        "Directory of the engine's model (faster-whisper: a CTranslate2 Whisper model with "
        "model.bin, config.json, tokenizer.json). Empty for pocketsphinx. Checked at start.",
        "",
    )
    transcribe_language: str = _doc(
        'Language spoken in the calls, e.g. "en" (pocketsphinx: English only).', "en"
    )
    transcribe_policy: tuple[str, ...] = _doc(
        "Which finished recordings are transcribed by themselves: empty (none: only on "
        'demand, from the API or `callrec transcribe`), ["all"], or rules kind=value with '
        "kind source (phone, sip, usb), extension (local or remote number), device (MAC) or "
        'tag, e.g. ["extension=3001", "tag=support"]: a recording matching any rule.',
        (),
    )
    transcribe_workers: int = _doc(
        "Transcription worker processes of `callrec serve` (niced below recording); 0 turns "
        "transcription off in the server.",
        1,
    )
    # -- issue 17 part 1: the object storage tier (docs/scaling.md, "Object storage") --
    storage_url: str = _doc(
        'Where finished recordings go: "s3://bucket/prefix" on any S3-compatible store (the '
        "bucket is created when missing). Upload jobs copy each recording's files there, "
        "verify them (SHA-256 of what the store returns) and only then treat the local "
        "files as a cache; playback and downloads read the store when the cache lacks a "
        "file. Empty: recordings stay on this machine's disk only.",
        "",
    )
    storage_endpoint: str = _doc(
        "URL of the S3 API (http://127.0.0.1:8333, https://s3.eu-west-1.amazonaws.com). "
        "Empty: AWS's endpoint for storage_region.",
        "",
    )
    storage_region: str = _doc(
        "Region of the bucket (any name for most other stores).", "us-east-1"
    )
    storage_access_key: str = _doc(
        "Access key id for the store. Empty: boto3's own chain (AWS_* environment variables, "
        "~/.aws, an instance role).",
        "",
    )
    storage_secret_key: str = _doc(
        "Secret access key for the store (never printed by `callrec config show`).", ""
    )
    storage_verify: str = _doc(
        "How an upload is verified: \"checksum\" sends the file's SHA-256 with it (S3's "
        "x-amz-checksum-sha256: the store refuses bytes that do not match) and requires the "
        'store\'s answer to name the same SHA-256, else reads it back; "read" always reads '
        "the object back and hashes what the store returns (proves it readable; twice the "
        "traffic).",
        "checksum",
    )
    storage_cache_max_bytes: str = _doc(
        "Most space the local copies of uploaded (and verified) recordings may take, as "
        "disk_quota is written (500GB, 2TiB); past it the least recently played go first. "
        "Empty: no size limit.",
        "",
    )
    storage_local_keep_days: float = _doc(
        "Days a local copy is kept after its upload was verified; then it is removed (the "
        "store keeps the recording). 0: removed at once; negative: kept (only "
        "storage_cache_max_bytes limits the cache).",
        -1.0,
    )
    storage_sweep_interval: float = _doc(
        "Seconds between the storage sweeps: objects of deleted recordings deleted from the "
        "store, and finished recordings without an upload job given one (one sweep at a time "
        "across processes and nodes).",
        60.0,
    )
    storage_timeout: float = _doc(
        "Seconds the store has to connect or answer one request before an upload is retried "
        "(with back-off) or a playback fails.",
        10.0,
    )

    def __post_init__(self) -> None:
        for name in ("control_port", "media_port_min", "media_port_max"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{name} must be a port number (0-65535), got {port}")
        if self.media_port_min > self.media_port_max:
            raise ConfigError("media_port_min must not exceed media_port_max")
        if self.media_port_min == 0 and self.media_port_max != 0:
            raise ConfigError("media port 0 (any free port) must be given as min=max=0")
        for name in ("control_host", "media_host"):
            _check_ip(name, getattr(self, name))
        if self.advertised_address:
            _check_ip("advertised_address", self.advertised_address)
        if self.workers < 1:
            raise ConfigError("workers must be >= 1")
        if self.web_listen_max_per_user < 1:
            raise ConfigError("web_listen_max_per_user must be >= 1")
        if self.workers > 1 and (
            self.media_port_min == 0 or self.media_port_max - self.media_port_min + 1 < self.workers
        ):
            raise ConfigError(
                "workers > 1 needs a media port range with at least one port per worker"
            )
        if self.media_rcvbuf < 4096:
            raise ConfigError(f"media_rcvbuf must be >= 4096 bytes, got {self.media_rcvbuf}")
        if self.reorder_window < 0:
            raise ConfigError("reorder_window must be >= 0")
        for name in (
            "max_gap_seconds",
            "sync_interval",
            "media_read_interval",
            "message_idle",
            "connection_idle_timeout",
            "close_after_stop",
            "media_relatch_after",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        if self.sync_mode not in SYNC_MODES:
            raise ConfigError(
                f"sync_mode must be one of {', '.join(SYNC_MODES)}, not {self.sync_mode!r}"
            )
        if self.max_message_bytes < 256:
            raise ConfigError("max_message_bytes must be at least 256")
        for name in (
            "max_sessions",
            "max_sessions_per_device",
            "max_connections",
            "max_connections_per_source",
            "max_sessions_per_connection",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.max_bad_requests < 1:
            raise ConfigError("max_bad_requests must be >= 1")
        if self.disk_reserve_bytes < 0 or not 0 <= self.disk_reserve_percent < 100:
            raise ConfigError("disk reserve must be >= 0 bytes and 0-100 percent")
        if self.max_duration < 0:
            raise ConfigError("max_duration must be >= 0")
        if self.rtp_timeout < 0:
            raise ConfigError("rtp_timeout must be >= 0")
        if self.media_port_quarantine < 0:
            raise ConfigError("media_port_quarantine must be >= 0")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(
                f"log_level must be DEBUG, INFO, WARNING or ERROR, not {self.log_level}"
            )
        parse_mode(self.file_mode)
        if self.integrity_sign_interval < 0:
            raise ConfigError("integrity_sign_interval must be >= 0")
        if bool(self.web_tls_cert) != bool(self.web_tls_key):
            raise ConfigError("web_tls_cert and web_tls_key must be given together")
        # -- issue 16 part 4: archive formats --
        if self.archive_format not in ("", "flac", "opus"):
            raise ConfigError(
                f'archive_format must be "", "flac" or "opus", not {self.archive_format!r}'
            )
        if self.archive_after_days < 0:
            raise ConfigError("archive_after_days must be >= 0")
        if not 6000 <= self.archive_opus_bitrate <= 256000:
            raise ConfigError("archive_opus_bitrate must be 6000-256000 bits/s per channel")
        if self.archive_interval <= 0:
            raise ConfigError("archive_interval must be > 0")
        from callrec.access import AllowList, DeviceAllowList

        for name in (
            "control_allow",
            "control_allow_devices",
            "sip_allow",
            "sip_trusted_peers",
            "web_allow",
        ):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigError(f"{name} must be a list of entries, not one string")
            object.__setattr__(self, name, tuple(value))  # a list given in code is kept as is

        for name in ("control_allow", "sip_allow", "sip_trusted_peers", "web_allow"):
            AllowList(getattr(self, name), setting=name)
        DeviceAllowList(self.control_allow_devices, setting="control_allow_devices")
        from callrec.media.naming import check_template

        check_template(self.filename_template)
        self._check_jobs()
        self._check_node()

    def _check_node(self) -> None:
        if not self.node_name:
            object.__setattr__(self, "node_name", default_node_name())
        check_node_name(self.node_name, "node_name")
        if isinstance(self.peer_recordings_dirs, str):
            raise ConfigError("peer_recordings_dirs must be a list of node=directory entries")
        object.__setattr__(self, "peer_recordings_dirs", tuple(self.peer_recordings_dirs))
        self.peer_dirs()  # raises on a bad entry

    def peer_dirs(self) -> dict[str, Path]:
        """``peer_recordings_dirs`` as node -> directory."""
        dirs: dict[str, Path] = {}
        for entry in self.peer_recordings_dirs:
            node, sep, directory = entry.partition("=")
            node = node.strip()
            if not sep or not directory.strip():
                raise ConfigError(f"peer_recordings_dirs: {entry!r} is not node=directory")
            check_node_name(node, "peer_recordings_dirs")
            dirs[node] = Path(directory.strip())
        return dirs

    def _check_jobs(self) -> None:
        for name in (
            "job_poll_interval",
            "job_keep_days",
            "webhook_timeout",
            "webhook_retry_hours",
            "on_complete_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        if not 0 <= self.job_catch_up_hours < 24 * self.job_keep_days:
            # A completion purged, then caught up again, would notify its webhooks again.
            raise ConfigError("job_catch_up_hours must be >= 0 and shorter than job_keep_days")
        if isinstance(self.webhook_url, str):
            raise ConfigError("webhook_url must be a list of URLs, not one string")
        object.__setattr__(self, "webhook_url", tuple(self.webhook_url))
        for url in (*self.webhook_url, *filter(None, [self.web_public_url])):
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{url!r} is not an http:// or https:// URL")
        if self.webhook_url and not self.webhook_secret:
            raise ConfigError("webhook_url needs webhook_secret (receivers check signatures)")
        if self.on_complete_command:
            import shlex

            try:
                words = shlex.split(self.on_complete_command)
            except ValueError as exc:
                raise ConfigError(f"on_complete_command: {exc}") from exc
            if not words:
                raise ConfigError("on_complete_command names no program")
        if self.retention_days < 0:
            raise ConfigError("retention_days must be >= 0 (0: forever)")
        if isinstance(self.retention_rules, str):
            raise ConfigError("retention_rules must be a list of rules, not one string")
        object.__setattr__(self, "retention_rules", tuple(self.retention_rules))
        from callrec.catalog.policy import RetentionRule
        from callrec.exceptions import CatalogError

        for rule in self.retention_rules:
            try:
                RetentionRule.parse(rule)
            except CatalogError as exc:
                raise ConfigError(f"retention_rules: {exc}") from exc
        parse_quota(self.disk_quota)
        self._check_transcription()
        self._check_storage()

    def _check_transcription(self) -> None:
        from callrec.catalog.policy import TranscribePolicy
        from callrec.exceptions import CatalogError

        engines = ("pocketsphinx", "faster-whisper")  # callrec.transcribe.ENGINES
        if self.transcribe_engine not in engines:
            raise ConfigError(
                f"transcribe_engine must be one of {', '.join(engines)}, "
                f"not {self.transcribe_engine!r}"
            )
        if not self.transcribe_language.strip():
            raise ConfigError("transcribe_language must not be empty")
        if not 0 <= self.transcribe_workers <= max(1, os.cpu_count() or 1):
            raise ConfigError(
                f"transcribe_workers must be 0-{max(1, os.cpu_count() or 1)} (the CPU count)"
            )
        if isinstance(self.transcribe_policy, str):
            raise ConfigError("transcribe_policy must be a list of rules, not one string")
        object.__setattr__(self, "transcribe_policy", tuple(self.transcribe_policy))
        try:
            TranscribePolicy.parse(self.transcribe_policy)
        except CatalogError as exc:
            raise ConfigError(f"transcribe_policy: {exc}") from exc

    def _check_storage(self) -> None:
        from callrec.storage.location import StorageLocation

        if self.storage_url:
            StorageLocation.parse(self.storage_url)  # raises ConfigError with the reason
        if self.storage_endpoint and not self.storage_endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"storage_endpoint {self.storage_endpoint!r} is not an http(s) URL")
        if bool(self.storage_access_key) != bool(self.storage_secret_key):
            raise ConfigError("storage_access_key and storage_secret_key must be given together")
        if self.storage_verify not in ("checksum", "read"):
            raise ConfigError(
                f'storage_verify must be "checksum" or "read", not {self.storage_verify!r}'
            )
        for name in ("storage_timeout", "storage_sweep_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        if self.storage_cache_max_bytes:
            parse_size("storage_cache_max_bytes", self.storage_cache_max_bytes)

    @classmethod
    def fields_doc(cls) -> list[tuple[str, str, Any]]:
        """(name, documentation, default) of every setting, in declaration order."""
        return [(f.name, f.metadata["doc"], f.default) for f in dataclasses.fields(cls)]


#: What a node name may be: a host name's label characters (it names files and job claims).
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def default_node_name() -> str:
    """The host name, cut to what a node name may hold (its first label when too long)."""
    host = socket.gethostname() or "callrec"
    if NODE_NAME.fullmatch(host):
        return host
    label = re.sub(r"[^A-Za-z0-9._-]", "-", host.split(".")[0])[:63].lstrip("._-")
    return label or "callrec"


def check_node_name(value: str, setting: str) -> None:
    if not NODE_NAME.fullmatch(value):
        raise ConfigError(
            f"{setting}: node name {value!r} must be 1-63 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )


_QUOTA_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_quota(text: str) -> tuple[str, float] | None:
    """``disk_quota`` as ("bytes", n) or ("percent", p); None when empty (no quota)."""
    value = text.strip().lower().replace(" ", "")
    if not value:
        return None
    try:
        if value.endswith("%"):
            percent = float(value[:-1])
            if not 0 < percent <= 100:
                raise ValueError(value)
            return "percent", percent
        number = value.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = value[len(number) :]
        amount = float(number) * _QUOTA_UNITS[unit]
        if amount <= 0:
            raise ValueError(value)
        return "bytes", amount
    except (ValueError, KeyError) as exc:
        raise ConfigError(
            f"disk_quota must be bytes (500GB, 2TiB, 1000000000) or a percent (80%), got {text!r}"
        ) from exc


def parse_size(name: str, text: str) -> int:
    """A size in bytes written as disk_quota's (500GB, 2TiB, 1000000000)."""
    value = text.strip().lower().replace(" ", "")
    number = value.rstrip("abcdefghijklmnopqrstuvwxyz")
    try:
        amount = float(number) * _QUOTA_UNITS[value[len(number) :]]
    except (ValueError, KeyError):
        amount = -1.0
    if amount <= 0:
        raise ConfigError(f"{name} must be bytes (500GB, 2TiB, 1000000000), got {text!r}")
    return int(amount)


def _rule_table(name: str, item: Any) -> str:
    """A TOML table of ``retention_rules`` ({extension = "3001", days = 3650}) as text."""
    if not isinstance(item, dict):
        return str(item)
    kinds = [k for k in item if k != "days"]
    if len(kinds) != 1 or "days" not in item:
        raise ConfigError(
            f"setting {name}: {item!r} needs days and one of source, extension, device, tag"
        )
    return f"{kinds[0]}={item[kinds[0]]}:{item['days']}"


def _check_ip(name: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an IP address, got {value!r}") from exc


def _coerce(name: str, raw: Any, target: Any) -> Any:
    kind = type(target)
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind is int:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if kind is float:
            return float(raw)
        if isinstance(target, Path):
            return Path(str(raw))
        if kind is tuple:
            # A TOML array, or one string (an environment variable): comma or space separated.
            items = raw if isinstance(raw, list | tuple) else str(raw).replace(",", " ").split()
            items = [_rule_table(name, item) for item in items]
            return tuple(str(item).strip() for item in items if str(item).strip())
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: cannot use {raw!r} as {kind.__name__}") from exc


def load_settings(
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Settings, dict[str, str]]:
    """Build the effective settings; returns them and, per field, where the value came from."""
    env = os.environ if environ is None else environ
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = dict(defaults)
    source = {name: "default" for name in defaults}

    path = config_file or (Path(env["CALLREC_CONFIG"]) if env.get("CALLREC_CONFIG") else None)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        table = data.get("callrec", data)
        for key, raw in table.items():
            if key not in defaults:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, raw, defaults[key])
            source[key] = str(path)

    for key in defaults:
        env_key = f"CALLREC_{key.upper()}"
        if env_key in env:
            values[key] = _coerce(key, env[env_key], defaults[key])
            source[key] = env_key

    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        if key not in defaults:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _coerce(key, raw, defaults[key])
        source[key] = "command line"

    return Settings(**values), source
