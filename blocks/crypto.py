"""Encryption of block documents at rest: Fernet keys, key ids, the key file, rotation.

1. Scheme: Fernet (``cryptography``: AES-128-CBC + HMAC-SHA256, a random IV per token), several keys
   through ``MultiFernet``: the first (primary) key encrypts, every key decrypts. Fernet is the simple,
   misuse-resistant choice (no nonce to manage); a block is encrypted once per change, so its speed
   (~13 µs) does not matter. AES-GCM would save ~40 bytes per row and nothing else we need.
2. Binding: the encrypted plaintext is ``tripwire:<context>\\n<document>`` where the context names the
   row (``block:<type>/<name>``), checked on decryption. The token's HMAC covers it, so a ciphertext copied
   onto another row (another block's webhook swapped in by someone with write access to the database) is
   refused instead of used: the same guarantee as AES-GCM associated data.
3. Key ids: a key's id is the first 12 hex digits of SHA-256 over a fixed prefix and the key. Each row
   stores the id of the key that encrypted it, so ``tripwire block ls`` shows which blocks still use an
   old key, and a failure can say which key was missing. An id reveals nothing usable about the key.
4. Keys come from ``TRIPWIRE_ENCRYPTION_KEY`` (``settings.encryption_key``): one key, or several
   separated by commas, first = primary. Unset, they come from the key file ``<home>/encryption.key``
   (one key per line, first = primary, ``#`` comments), created on first use (note 5). A key is 32
   url-safe base64-encoded bytes (``tripwire block generate-key`` prints a new one). Keys never go into
   the database, messages or logs. Processes sharing a database must share the keys: on several hosts,
   set ``TRIPWIRE_ENCRYPTION_KEY`` (a key file is per home directory).
5. The key file is created atomically: the key is written to a temporary file opened with
   ``O_CREAT|O_EXCL`` and mode 0600, then hard-linked to its name (``link`` fails if the name exists, so
   of several processes starting together one creates it and all read the same key; none ever sees it
   half-written). A key file readable or writable by group or others is refused (ConfigurationError).
6. Rotation: put the new key first and keep the old one (``TRIPWIRE_ENCRYPTION_KEY="NEW,OLD"``, or NEW
   on the key file's first line and OLD below), restart the server and runners, run
   ``tripwire block rotate-key`` (every block is re-encrypted with NEW, in one transaction), check that
   ``tripwire block ls`` shows only NEW's id, then drop OLD and restart again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from tripwire.errors import ConfigurationError
from tripwire.settings import Settings

__all__ = [
    "ENV_VAR",
    "KEY_FILE_NAME",
    "Cipher",
    "DecryptionFailed",
    "key_file_path",
    "read_key_file",
    "split_keys",
]

ENV_VAR = "TRIPWIRE_ENCRYPTION_KEY"
KEY_FILE_NAME = "encryption.key"
_KEY_ID_PREFIX = b"tripwire-key-id\x00"
_PLAINTEXT_PREFIX = b"tripwire:"
_GENERATE = "`tripwire block generate-key` prints a new one"


class DecryptionFailed(ConfigurationError):
    """A ciphertext cannot be decrypted with the configured keys (or belongs to another record)."""


def _key_id(raw: bytes) -> str:
    return hashlib.sha256(_KEY_ID_PREFIX + raw).hexdigest()[:12]


def split_keys(text: str) -> list[str]:
    """The keys in a comma- or newline-separated text, without blanks and ``#`` comments."""
    keys = []
    for line in text.replace(",", "\n").splitlines():
        key = line.strip()
        if key and not key.startswith("#"):
            keys.append(key)
    return keys


class Cipher:
    """Encrypts with the primary (first) key and decrypts with any configured key (note 1)."""

    def __init__(self, keys: Sequence[str | bytes | SecretStr], *, source: str = "the given keys") -> None:
        if not keys:
            raise ConfigurationError(f"no encryption key in {source}: {_GENERATE}")
        fernets: list[Fernet] = []
        ids: list[str] = []
        for i, key in enumerate(keys, start=1):
            value = key.get_secret_value() if isinstance(key, SecretStr) else key
            raw_text = value.strip() if isinstance(value, str) else value.strip().decode("ascii", "replace")
            try:
                fernet = Fernet(raw_text)
                raw = base64.urlsafe_b64decode(raw_text)
            except (ValueError, TypeError):
                raise ConfigurationError(
                    f"encryption key {i} of {len(keys)} in {source} is not a valid key "
                    f"(32 url-safe base64-encoded bytes): {_GENERATE}"
                ) from None
            fernets.append(fernet)
            ids.append(_key_id(raw))
        self.source = source
        self.key_ids: tuple[str, ...] = tuple(ids)
        self._fernets = tuple(fernets)
        self._multi = MultiFernet(fernets)

    def __repr__(self) -> str:
        return f"Cipher(key_ids={list(self.key_ids)!r}, source={self.source!r})"

    @property
    def key_id(self) -> str:
        """The id of the primary key: the one that encrypts."""
        return self.key_ids[0]

    @staticmethod
    def generate_key() -> str:
        """A new random key, as text fit for ``TRIPWIRE_ENCRYPTION_KEY`` or the key file."""
        return Fernet.generate_key().decode("ascii")

    @classmethod
    def generate(cls) -> Cipher:
        """A cipher with one new random key (tests, first start)."""
        return cls([cls.generate_key()], source="a generated key")

    @classmethod
    def from_settings(cls, settings: Settings) -> Cipher:
        """Keys from ``TRIPWIRE_ENCRYPTION_KEY``, else from the key file under home, created 0600 (note 4)."""
        if settings.encryption_key is not None:
            keys = split_keys(settings.encryption_key.get_secret_value())
            if not keys:
                raise ConfigurationError(f"{ENV_VAR} is set but holds no key: {_GENERATE}, or unset it")
            return cls(keys, source=ENV_VAR)
        path = key_file_path(settings)
        return cls(read_key_file(path, create=True), source=f"the key file {path}")

    def encrypt(self, plaintext: bytes, *, context: str) -> str:
        """A token of ``plaintext`` bound to ``context`` (note 2), encrypted with the primary key."""
        if "\n" in context:
            raise ValueError("an encryption context cannot contain a newline")
        return self._fernets[0].encrypt(_PLAINTEXT_PREFIX + context.encode() + b"\n" + plaintext).decode()

    def decrypt(self, token: str, *, context: str) -> bytes:
        """The plaintext of ``token``; DecryptionFailed if no key opens it or its context differs."""
        try:
            sealed = self._multi.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise DecryptionFailed("cannot be decrypted with the configured key(s)") from None
        head, sep, plaintext = sealed.partition(b"\n")
        if not sep or not head.startswith(_PLAINTEXT_PREFIX):
            raise DecryptionFailed("is not a Tripwire ciphertext")
        owner = head.removeprefix(_PLAINTEXT_PREFIX).decode("utf-8", "replace")
        if owner != context:
            raise DecryptionFailed(f"was encrypted for {owner!r}, not {context!r}: copied between rows?")
        return plaintext

    def can_decrypt(self, token: str) -> bool:
        """Whether some configured key opens ``token`` (whatever its context)."""
        try:
            self._multi.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            return False
        return True


def key_file_path(settings: Settings) -> Path:
    """Where the key file lives: ``<home>/encryption.key``."""
    return settings.home / KEY_FILE_NAME


def _create_key_file(path: Path) -> None:
    """Create ``path`` holding a new key, atomically and with mode 0600 (note 5); a no-op if it exists."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    header = "# Tripwire encryption key (first line = primary); see blocks/crypto.py"
    content = f"{header}\n{Cipher.generate_key()}\n"
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, content.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
        except OSError:  # no hard links on this file system: create the name itself exclusively
            with contextlib.suppress(FileExistsError):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, content.encode("ascii"))
                    os.fsync(fd)
                finally:
                    os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def read_key_file(path: Path, *, create: bool = False) -> list[str]:
    """The keys in the key file (first = primary); refuses a file others can access (note 5)."""
    if create and not path.exists():
        _create_key_file(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigurationError(f"no key file at {path}: set {ENV_VAR} or let Tripwire create it") from None
    if not path.is_file():
        raise ConfigurationError(f"the key file {path} is not a regular file")
    if os.name == "posix" and info.st_mode & 0o077:
        raise ConfigurationError(
            f"the key file {path} can be read or written by group/others (mode {info.st_mode & 0o777:o}): "
            f"run `chmod 600 {path}`"
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the key file {path}: {type(exc).__name__}") from None
    keys = split_keys(text)
    if not keys:
        raise ConfigurationError(
            f"the key file {path} holds no key: {_GENERATE} (blocks encrypted with a lost key cannot be read)"
        )
    return keys
