"""Signing the chain's head, and the chain's catch-up: plain, idempotent functions over the
catalogue, safe to run twice or from two processes (both hold the chain's head lock).

``callrec serve`` runs them periodically and at a clean stop (:mod:`callrec.service.root`).
"""

from __future__ import annotations

import logging
from datetime import datetime

from callrec.catalog import Catalog
from callrec.catalog import integrity as chain
from callrec.integrity.keys import SigningKey

logger = logging.getLogger(__name__)


def signed_message(*, seq: int, hash_: str, time: datetime, key: str) -> str:
    """The canonical JSON a signature is over (docs/integrity.md)."""
    return chain.canonical(
        {"v": chain.FORMAT, "seq": seq, "hash": hash_, "time": chain.time_text(time), "key": key}
    )


def sign_head(catalog: Catalog, key: SigningKey, now: datetime) -> chain.SignatureRecord | None:
    """Sign the chain's head unless this key has signed it already; the new signature, or
    None when there was nothing new to sign (an empty chain, or no entry since)."""
    with catalog.transaction("sign the integrity chain", write=True) as session:
        connection = session.connection()
        seq, head_hash = chain.lock_head(connection)
        if seq == 0:
            return None
        last = chain.last_signature(connection, at_least=seq)
        if last is not None and last.seq == seq and last.key_id == key.key_id:
            return None
        body = signed_message(seq=seq, hash_=head_hash, time=now, key=key.key_id)
        signature = key.sign(body)
        chain.add_signature(
            connection,
            seq=seq,
            hash_=head_hash,
            signed_at=now,
            key_id=key.key_id,
            body=body,
            signature=signature,
        )
        made = chain.last_signature(connection, at_least=seq)
    logger.info("integrity chain signed up to entry %d", seq)
    return made


def catch_up(catalog: Catalog) -> int:
    """Append to the chain every finished recording not in it yet; how many."""
    with catalog.transaction("catch the integrity chain up", write=True) as session:
        appended = chain.catch_up(session.connection())
    if appended:
        logger.info("integrity chain: %d finished recordings appended by the catch-up", appended)
    return appended


def maintain(catalog: Catalog, key: SigningKey, now: datetime) -> None:
    """The periodic work: the catch-up, then a signature of the head."""
    catch_up(catalog)
    sign_head(catalog, key, now)
