"""The installation's Ed25519 key that signs the hash chain's head.

Made at the first start under ``<recordings>/.callrec/integrity/`` (the private key 0600,
the public key beside it as PEM), or read from ``integrity_key_file``. The public key is what
a verifier needs; it should also be kept somewhere an attacker of this machine cannot reach
(docs/integrity.md).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from callrec import filemodes
from callrec.exceptions import CallrecError

logger = logging.getLogger(__name__)

#: Under the recordings directory (beside the journals and the TLS files).
KEY_DIR: Final = Path(".callrec") / "integrity"
PRIVATE_NAME: Final = "signing-key.pem"


class KeyFileError(CallrecError):
    """The signing key cannot be read or made."""


def default_key_file(recordings_dir: Path) -> Path:
    return recordings_dir.resolve() / KEY_DIR / PRIVATE_NAME


def key_file(recordings_dir: Path, setting: str) -> Path:
    """The private key's file: ``integrity_key_file`` or the default."""
    return Path(setting) if setting else default_key_file(recordings_dir)


def public_raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the raw 32-byte public key: names the key in each signature."""
    return hashlib.sha256(public_raw(public)).hexdigest()


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_pem(data: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"not an Ed25519 public key but {type(key).__name__}")
    return key


def verify_signature(public: Ed25519PublicKey, signature_hex: str, message: str) -> bool:
    try:
        public.verify(bytes.fromhex(signature_hex), message.encode("utf-8"))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The private key and what is derived from it."""

    private: Ed25519PrivateKey
    path: Path

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    def sign(self, message: str) -> str:
        """The signature (hex) of ``message``'s UTF-8."""
        return self.private.sign(message.encode("utf-8")).hex()


def load_key(path: Path) -> SigningKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the signing key {path}: {exc.strerror or exc}") from exc
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key but {type(private).__name__}")
    return SigningKey(private=private, path=path)


def load_or_create(path: Path) -> SigningKey:
    """The key in ``path``, made there (with its public key beside) when there is none."""
    if path.exists():
        return load_key(path)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        filemodes.make_dirs(path.parent, private=True)
        # Written aside and renamed: a crash never leaves half a key to be read next time.
        temporary = path.with_name(path.name + ".tmp")
        temporary.unlink(missing_ok=True)
        filemodes.write_new(temporary, pem, private=True)
        temporary.replace(path)
    except OSError as exc:
        raise KeyFileError(f"cannot make the signing key {path}: {exc.strerror or exc}") from exc
    key = SigningKey(private=private, path=path)
    export_public(key)
    logger.warning(
        "made the signing key of the recordings' hash chain, %s (key id %s): keep a copy of "
        "its public key %s away from this machine",
        path,
        key.key_id[:16],
        public_file(path),
    )
    return key


def public_file(private_path: Path) -> Path:
    name = private_path.name.removesuffix(".pem") + ".pub.pem"
    return private_path.with_name(name)


def export_public(key: SigningKey) -> Path:
    """Write the public key beside the private one (if it is not there yet)."""
    path = public_file(key.path)
    if not path.exists():
        try:
            filemodes.write_new(path, public_pem(key.public).encode("ascii"))
        except FileExistsError:
            pass
        except OSError as exc:
            logger.warning("cannot export the public key to %s: %s", path, exc)
    return path


def installation_public_key(recordings_dir: Path, setting: str) -> Ed25519PublicKey | None:
    """The installation's public key: from its private key when this user may read it, else
    from the public key exported beside it; None when there is none yet."""
    private = key_file(recordings_dir, setting)
    try:
        return load_key(private).public
    except KeyFileError:
        pass
    try:
        return load_public_pem(public_file(private).read_bytes())
    except (OSError, KeyFileError):
        return None
