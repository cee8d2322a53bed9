"""Verification: the hash chain, its signatures, the catalogue against it, and the files.

:func:`verify` checks everything (``callrec verify --all``) or some recordings; it names each
finding by kind:

========== ==================================================================================
altered    the file's SHA-256 is not the chain's (and it is no other recording's content)
missing    the file is gone
truncated  the file is shorter than the chain says (and its SHA-256 differs)
swapped    the file holds another recording's content (its SHA-256 is that one's)
unexpected a WAV under the recordings that no chain entry names (nor a call being recorded)
chain      an entry whose hash, link, sequence or columns do not check out, or a wrong head
signature  a signature that does not verify, or whose signed head the chain no longer has
catalogue  a recording's row says another file or SHA-256 than its chain entry
unchained  a finished recording that is not in the chain
========== ==================================================================================

Files are read in 1 MiB blocks (bounded memory, whatever their size). :func:`check_one` is
the web's "Verify now": one recording's entry, its link, the last signature and its file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from callrec.catalog import Catalog
from callrec.catalog import integrity as chain
from callrec.exceptions import CallrecError
from callrec.integrity.keys import key_id, verify_signature
from callrec.media.wav import being_written

KINDS: Final = (
    "altered",
    "missing",
    "truncated",
    "swapped",
    "unexpected",
    "chain",
    "signature",
    "catalogue",
    "unchained",
)
#: Hashes a recording's file in the object store when its local copy is gone (issue 17):
#: given the recording's id and the file's catalogued path, the SHA-256 and size of the bytes
#: the store returns, or None when the file was never uploaded. Raises CallrecError when
#: the store fails.
RemoteHash = Callable[[int, str], tuple[str, int] | None]
#: Said of a file checked in the object store, its local copy gone.
IN_STORE: Final = " (the object store's copy: no local copy)"
#: Bytes read at a time when hashing a file.
BLOCK: Final = 1 << 20
#: The recordings' own state directory (journals, keys): never recordings.
STATE_DIR: Final = ".callrec"


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    path: str
    recording_id: int | None
    detail: str

    def line(self) -> str:
        who = f"#{self.recording_id} " if self.recording_id is not None else ""
        return f"{self.kind}: {who}{self.path}: {self.detail}".replace(" : ", " ")


@dataclass(slots=True)
class Report:
    """What a verification checked and found."""

    entries: int = 0
    head_seq: int = 0
    signatures: int = 0
    #: The newest signature that verifies: the entry it covers, and when.
    signed_seq: int | None = None
    signed_at: datetime | None = None
    #: That signature's signed text and signature (hex): what to copy off the machine.
    signed_body: str | None = None
    signature: str | None = None
    files: int = 0
    bytes: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head_seq": self.head_seq,
            "signatures": self.signatures,
            "signed_seq": self.signed_seq,
            "signed_at": None if self.signed_at is None else self.signed_at.isoformat(),
            "signed_body": self.signed_body,
            "signature": self.signature,
            "files": self.files,
            "bytes": self.bytes,
            "findings": [
                {"kind": f.kind, "path": f.path, "recording_id": f.recording_id, "detail": f.detail}
                for f in self.findings
            ],
        }


@dataclass(frozen=True, slots=True)
class _Live:
    """What the chain's last entry says a recording's files are."""

    seq: int
    kind: str
    path: str
    sha256: str | None
    size: int | None
    original_path: str | None
    original_sha256: str | None
    companions: tuple[str, ...]


#: Progress: (bytes hashed so far, bytes to hash in all).
ProgressFn = Callable[[int, int], None]


def hash_file(path: Path, progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """SHA-256 (hex) and size of the file, read in blocks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb", buffering=0) as file:
        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        while n := file.readinto(buffer):
            digest.update(view[:n])
            size += n
            if progress is not None:
                progress(n)
    return digest.hexdigest(), size


def _check_entry(entry: chain.ChainRecord, expected_seq: int, prev: str) -> str | None:
    """Why ``entry`` does not check out, or None."""
    if entry.seq != expected_seq:
        return f"entry #{expected_seq} is missing (next is #{entry.seq})"
    if chain.body_hash(entry.body) != entry.hash:
        return f"entry #{entry.seq}: its hash is not the SHA-256 of its body"
    try:
        body = json.loads(entry.body)
    except ValueError:
        return f"entry #{entry.seq}: its body is not JSON"
    if not isinstance(body, dict):
        return f"entry #{entry.seq}: its body is not a JSON object"
    if body.get("prev") != prev:
        return f"entry #{entry.seq}: it does not link to entry #{entry.seq - 1}'s hash"
    columns = {
        "seq": entry.seq,
        "kind": entry.kind,
        "recording_id": entry.recording_id,
        "path": entry.path,
        "sha256": entry.sha256,
    }
    for name, value in columns.items():
        if body.get(name) != value:
            return f"entry #{entry.seq}: column {name} says {value!r}, its body {body.get(name)!r}"
    return None


def _live(entry: chain.ChainRecord) -> _Live:
    body = entry.fields
    companions = body.get("companions")
    return _Live(
        seq=entry.seq,
        kind=entry.kind,
        path=entry.path,
        sha256=entry.sha256,
        size=body.get("size") if isinstance(body.get("size"), int) else None,
        original_path=body.get("original_path"),
        original_sha256=body.get("original_sha256"),
        companions=tuple(c for c in companions if isinstance(c, str))
        if isinstance(companions, list)
        else (),
    )


def _check_signatures(
    report: Report,
    signatures: Sequence[chain.SignatureRecord],
    signed_hashes: dict[int, str],
    public: Ed25519PublicKey | None,
) -> None:
    wanted = None if public is None else key_id(public)
    for sig in signatures:
        report.signatures += 1
        where = f"signature {sig.id} of entry #{sig.seq}"
        if public is None:
            continue
        if sig.key_id != wanted:
            report.findings.append(
                Finding("signature", where, None, f"made by another key ({sig.key_id[:16]})")
            )
            continue
        if not verify_signature(public, sig.signature, sig.body):
            report.findings.append(Finding("signature", where, None, "does not verify"))
            continue
        try:
            body = json.loads(sig.body)
        except ValueError:
            body = {}
        if not isinstance(body, dict) or (body.get("seq"), body.get("hash"), body.get("key")) != (
            sig.seq,
            sig.hash,
            sig.key_id,
        ):
            report.findings.append(
                Finding("signature", where, None, "its columns are not what was signed")
            )
            continue
        now = signed_hashes.get(sig.seq)
        if now != sig.hash:
            detail = (
                "the signed entry is gone"
                if now is None
                else "the chain up to the signed entry was changed after it was signed"
            )
            report.findings.append(Finding("signature", where, None, detail))
            continue
        if report.signed_seq is None or sig.seq >= report.signed_seq:
            report.signed_seq, report.signed_at = sig.seq, sig.signed_at
            report.signed_body, report.signature = sig.body, sig.signature


def verify(
    catalog: Catalog,
    root: Path,
    public: Ed25519PublicKey | None,
    *,
    ids: Sequence[int] | None = None,
    progress: ProgressFn | None = None,
    record: bool = True,
    remote: RemoteHash | None = None,
) -> Report:
    """Check the chain, its signatures (with ``public``; None: not checked), the catalogue
    and the files of ``ids`` (None: every recording, and look for unexpected WAV files).
    With ``record`` each recording's result is stored as its last check. With ``remote``
    a file whose local copy is gone is checked in the object store (and said so)."""
    report = Report()
    root = root.resolve()
    wanted = None if ids is None else set(ids)
    latest: dict[int, _Live] = {}
    with catalog.transaction("read the integrity chain") as session:
        connection = session.connection()
        signatures = chain.signatures(connection)
        signed_seqs = {sig.seq for sig in signatures}
        signed_hashes: dict[int, str] = {}
        prev, expected = chain.GENESIS, 1
        broken = False
        for entry in chain.iter_chain(connection):
            report.entries += 1
            if not broken:
                problem = _check_entry(entry, expected, prev)
                if problem is not None:
                    report.findings.append(
                        Finding("chain", entry.path, entry.recording_id, problem)
                    )
                    # Every later link breaks with this one: one finding says it.
                    broken = True
            if entry.seq in signed_seqs:
                signed_hashes[entry.seq] = entry.hash
            prev, expected = entry.hash, entry.seq + 1
            latest[entry.recording_id] = _live(entry)
        head_seq, head_hash = chain.head(connection)
        report.head_seq = head_seq
        if (head_seq, head_hash) != (expected - 1, prev if expected > 1 else chain.GENESIS):
            report.findings.append(
                Finding(
                    "chain",
                    "",
                    None,
                    f"the head says entry #{head_seq}, the chain ends at #{expected - 1}"
                    if head_seq != expected - 1
                    else f"the head's hash is not entry #{head_seq}'s",
                )
            )
        _check_signatures(report, signatures, signed_hashes, public)
        # Paths of recordings that are not chained (being recorded, failed): their WAV
        # files are not unexpected. Only those are kept (memory: few).
        unchained_paths: set[str] = set()
        for row in chain.catalogue_rows(connection):
            if row.status not in chain.CHAINED_STATUSES:
                unchained_paths.add(row.path)
            if wanted is not None and row.id not in wanted:
                continue
            if row.status not in chain.CHAINED_STATUSES or row.sha256 is None:
                continue
            live = latest.get(row.id)
            if live is None or live.kind == chain.KIND_DELETED:
                report.findings.append(
                    Finding("unchained", row.path, row.id, "finished but not in the chain")
                )
            elif (live.path, live.sha256) != (row.path, row.sha256):
                report.findings.append(
                    Finding(
                        "catalogue",
                        row.path,
                        row.id,
                        f"the row says another file or SHA-256 than chain entry #{live.seq}",
                    )
                )
    checks = _check_files(report, root, latest, wanted, progress, remote)
    if wanted is None:
        _find_unexpected(report, root, latest, unchained_paths)
    if record and checks:
        with catalog.transaction("record the integrity checks", write=True) as session:
            chain.record_checks(session.connection(), checks)
    return report


def _check_files(
    report: Report,
    root: Path,
    latest: dict[int, _Live],
    wanted: set[int] | None,
    progress: ProgressFn | None,
    remote: RemoteHash | None = None,
) -> list[tuple[int, str, str]]:
    todo = [
        (rec_id, live)
        for rec_id, live in sorted(latest.items())
        if live.kind != chain.KIND_DELETED and (wanted is None or rec_id in wanted)
    ]
    if wanted is not None:
        for rec_id in sorted(wanted - {rec_id for rec_id, _ in todo}):
            report.findings.append(
                Finding("unchained", "", rec_id, "no such recording in the chain")
            )
    by_hash: dict[str, int] = {}
    for rec_id, live in latest.items():
        if live.kind != chain.KIND_DELETED and live.sha256:
            by_hash.setdefault(live.sha256, rec_id)
    total = sum(live.size or 0 for _, live in todo)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    results: list[tuple[int, str, str]] = []
    for rec_id, live in todo:
        stored: list[str] = []
        found = _check_file(
            root, rec_id, live.path, live.sha256, live.size, by_hash, advance, remote, stored
        )
        if found is None and live.original_path and live.original_sha256:
            found = _check_file(
                root,
                rec_id,
                live.original_path,
                live.original_sha256,
                None,
                by_hash,
                advance,
                remote,
                stored,
            )
        report.files += 1
        if found is None:
            where = IN_STORE if stored else ""
            results.append((rec_id, "ok", f"matches chain entry #{live.seq}{where}"))
        else:
            report.findings.append(found)
            results.append((rec_id, found.kind, found.detail))
    report.bytes = done
    return results


def _check_file(
    root: Path,
    rec_id: int,
    relative: str,
    expected: str | None,
    size: int | None,
    by_hash: dict[str, int],
    advance: Callable[[int], None],
    remote: RemoteHash | None = None,
    stored: list[str] | None = None,
) -> Finding | None:
    """Re-hash one file; with ``remote``, a file whose local copy is gone is hashed in the
    object store (its path then appended to ``stored``, and findings say so)."""
    path = root / relative
    if not path.resolve().is_relative_to(root):
        return Finding("altered", relative, rec_id, "the path leaves the recordings directory")
    where = ""
    try:
        digest, found = hash_file(path, advance)
    except FileNotFoundError:
        got = None
        if remote is not None:
            try:
                got = remote(rec_id, relative)
            except CallrecError as exc:
                return Finding(
                    "missing", relative, rec_id, f"no local copy, and the object store: {exc}"
                )
        if got is None:
            return Finding("missing", relative, rec_id, "the file is gone")
        digest, found = got
        advance(found)
        where = IN_STORE
        if stored is not None:
            stored.append(relative)
    except OSError as exc:
        return Finding("missing", relative, rec_id, f"cannot read the file: {exc.strerror}")
    if digest == expected:
        return None
    other = by_hash.get(digest)
    if other is not None and other != rec_id:
        return Finding(
            "swapped", relative, rec_id, f"the file holds recording #{other}'s content{where}"
        )
    if size is not None and found < size:
        return Finding(
            "truncated", relative, rec_id, f"{found} bytes where the chain says {size}{where}"
        )
    return Finding("altered", relative, rec_id, f"its SHA-256 is not the chain's{where}")


def _find_unexpected(
    report: Report, root: Path, latest: dict[int, _Live], unchained_paths: set[str]
) -> None:
    known: set[str] = set()
    for live in latest.values():
        if live.kind == chain.KIND_DELETED:
            continue
        known.add(live.path)
        known.update(live.companions)
        if live.original_path:
            known.add(live.original_path)
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != STATE_DIR)
        for name in sorted(names):
            if not name.lower().endswith(".wav"):
                continue
            path = Path(directory, name)
            relative = path.relative_to(root).as_posix()
            if relative in known:
                continue
            if relative in unchained_paths:
                continue  # being recorded, or a failed recording's remains
            if being_written(path):
                continue  # a call whose start is not catalogued yet
            report.findings.append(
                Finding("unexpected", relative, None, "a WAV file no chain entry names")
            )


# -- one recording, for the web --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordingState:
    """One recording's place in the chain and its last verification."""

    recording_id: int
    #: Its last entry (None: not in the chain).
    seq: int | None
    kind: str | None
    chained_at: str | None
    #: The newest signature, and whether it covers this entry.
    signed_seq: int | None
    signed_at: datetime | None
    covered: bool
    checked_at: datetime | None
    result: str | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "recording_id": self.recording_id,
            "in_chain": self.seq is not None,
            "seq": self.seq,
            "kind": self.kind,
            "chained_at": self.chained_at,
            "signed_seq": self.signed_seq,
            "signed_at": None if self.signed_at is None else self.signed_at.isoformat(),
            "signed": self.covered,
            "checked_at": None if self.checked_at is None else self.checked_at.isoformat(),
            "result": self.result,
            "detail": self.detail,
        }


def state(catalog: Catalog, rec_id: int) -> RecordingState:
    with catalog.transaction(f"read recording {rec_id}'s integrity") as session:
        connection = session.connection()
        entries = chain.entries_of(connection, rec_id)
        last = entries[-1] if entries else None
        sig = chain.last_signature(connection)
        check = chain.last_check(connection, rec_id)
    chained_at = last.fields.get("time") if last is not None else None
    return RecordingState(
        recording_id=rec_id,
        seq=None if last is None else last.seq,
        kind=None if last is None else last.kind,
        chained_at=chained_at if isinstance(chained_at, str) else None,
        signed_seq=None if sig is None else sig.seq,
        signed_at=None if sig is None else sig.signed_at,
        covered=sig is not None and last is not None and sig.seq >= last.seq,
        checked_at=None if check is None else check[0],
        result=None if check is None else check[1],
        detail="" if check is None else check[2],
    )


def check_one(
    catalog: Catalog,
    root: Path,
    rec_id: int,
    public: Ed25519PublicKey | None,
    remote: RemoteHash | None = None,
) -> tuple[Finding | None, str]:
    """Re-hash one recording's file against its chain entry; also check that entry's own
    hash, its link to the entry before, and the newest signature. Returns the finding (None:
    all is well) and what to store as the check's detail (:func:`save_check`)."""
    root = root.resolve()
    with catalog.transaction(f"read recording {rec_id}'s integrity") as session:
        connection = session.connection()
        entries = chain.entries_of(connection, rec_id)
        entry = entries[-1] if entries else None
        before = None if entry is None else chain.entry_at(connection, entry.seq - 1)
        sig = chain.last_signature(connection)
        signed = None if sig is None else chain.entry_at(connection, sig.seq)
    if entry is None:
        return Finding("unchained", "", rec_id, "the recording is not in the chain"), ""
    stored: list[str] = []
    prev = chain.GENESIS if entry.seq == 1 else (before.hash if before else "")
    problem = (
        f"entry #{entry.seq - 1} is missing"
        if before is None and entry.seq > 1
        else _check_entry(entry, entry.seq, prev)
    )
    finding: Finding | None = None
    if problem is not None:
        finding = Finding("chain", entry.path, rec_id, problem)
    elif (
        sig is not None
        and public is not None
        and (
            sig.key_id != key_id(public)
            or not verify_signature(public, sig.signature, sig.body)
            or signed is None
            or signed.hash != sig.hash
        )
    ):
        finding = Finding(
            "signature", entry.path, rec_id, f"the signature of entry #{sig.seq} fails"
        )
    elif entry.kind == chain.KIND_DELETED:
        finding = Finding("missing", entry.path, rec_id, "the recording was deleted")
    else:
        # Another recording's content is looked up only when the file differs.
        live = _live(entry)
        finding = _check_file(
            root, rec_id, live.path, live.sha256, live.size, {}, _ignore, remote, stored
        )
        if finding is None and live.original_path and live.original_sha256:
            finding = _check_file(
                root,
                rec_id,
                live.original_path,
                live.original_sha256,
                None,
                {},
                _ignore,
                remote,
                stored,
            )
        if finding is not None and finding.kind == "altered" and not stored:
            finding = _maybe_swapped(catalog, root, rec_id, finding)
    if finding is not None:
        return finding, finding.detail
    return finding, f"matches chain entry #{entry.seq}{IN_STORE if stored else ''}"


def save_check(catalog: Catalog, rec_id: int, finding: Finding | None, detail: str) -> None:
    """Store the outcome of :func:`check_one` as the recording's last check (a write)."""
    result = "ok" if finding is None else finding.kind
    with catalog.transaction("record an integrity check", write=True) as session:
        chain.record_checks(session.connection(), [(rec_id, result, detail)])


def _ignore(n: int) -> None:
    pass


def _maybe_swapped(catalog: Catalog, root: Path, rec_id: int, finding: Finding) -> Finding:
    """``finding`` as ``swapped`` when the file's content is another recording's."""
    try:
        digest, _ = hash_file(root / finding.path)
    except OSError:
        return finding
    with catalog.transaction("look up a SHA-256 in the chain") as session:
        other = (
            session.connection()
            .execute(
                chain.CHAIN.select()
                .with_only_columns(chain.CHAIN.c.recording_id)
                .where(chain.CHAIN.c.sha256 == digest, chain.CHAIN.c.recording_id != rec_id)
                .limit(1)
            )
            .scalar()
        )
    if other is None:
        return finding
    return Finding("swapped", finding.path, rec_id, f"the file holds recording #{other}'s content")
