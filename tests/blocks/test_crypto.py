"""Cipher: encryption bound to a context, key ids, keys from settings, the 0600 key file, concurrency."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from blocks.crypto import Cipher, DecryptionFailed, key_file_path, read_key_file, split_keys
from tripwire.errors import ConfigurationError
from tripwire.settings import Settings

SECRET = b"hunter2-super-secret-value"


@pytest.fixture
def umask_022() -> Iterator[None]:
    """A permissive umask, as on most systems: the key file must still be 0600."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def settings_at(home: Path, key: str | None = None) -> Settings:
    return Settings(home=home, encryption_key=SecretStr(key) if key is not None else None)


def test_encrypt_then_decrypt_with_the_same_context() -> None:
    cipher = Cipher.generate()
    token = cipher.encrypt(SECRET, context="block:secret/a")
    assert SECRET not in token.encode()
    assert cipher.decrypt(token, context="block:secret/a") == SECRET
    assert cipher.encrypt(SECRET, context="block:secret/a") != token  # a fresh IV every time


def test_a_ciphertext_is_bound_to_its_context() -> None:
    cipher = Cipher.generate()
    token = cipher.encrypt(SECRET, context="block:secret/a")
    with pytest.raises(DecryptionFailed, match="encrypted for 'block:secret/a', not 'block:secret/b'"):
        cipher.decrypt(token, context="block:secret/b")


def test_a_wrong_key_is_a_clear_error_not_garbage() -> None:
    token = Cipher.generate().encrypt(SECRET, context="c")
    with pytest.raises(DecryptionFailed, match="cannot be decrypted with the configured key"):
        Cipher.generate().decrypt(token, context="c")
    with pytest.raises(DecryptionFailed):
        Cipher.generate().decrypt("not a token at all", context="c")


def test_the_primary_key_encrypts_and_every_key_decrypts() -> None:
    old, new = Cipher.generate_key(), Cipher.generate_key()
    old_token = Cipher([old]).encrypt(SECRET, context="c")
    both = Cipher([new, old])
    assert both.decrypt(old_token, context="c") == SECRET
    new_token = both.encrypt(SECRET, context="c")
    assert Cipher([new]).decrypt(new_token, context="c") == SECRET
    assert not Cipher([old]).can_decrypt(new_token)
    assert both.key_id == Cipher([new]).key_id != Cipher([old]).key_id
    assert both.key_ids == (Cipher([new]).key_id, Cipher([old]).key_id)


def test_key_ids_are_stable_and_reveal_no_key() -> None:
    key = Cipher.generate_key()
    cipher = Cipher([key])
    assert cipher.key_id == Cipher([SecretStr(key)]).key_id
    assert len(cipher.key_id) == 12
    assert key not in repr(cipher)
    assert cipher.key_id in repr(cipher)


@pytest.mark.parametrize(
    "bad", [pytest.param("short", id="too-short"), pytest.param("!" * 44, id="not-base64")]
)
def test_an_invalid_key_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="encryption key 2 of 2 in TRIPWIRE_ENCRYPTION_KEY") as info:
        Cipher.from_settings(settings_at(Path("/nonexistent"), f"{Cipher.generate_key()},{bad}"))
    assert bad not in str(info.value)
    assert "generate-key" in str(info.value)


def test_keys_from_the_setting_win_over_the_key_file(tmp_path: Path) -> None:
    new, old = Cipher.generate_key(), Cipher.generate_key()
    cipher = Cipher.from_settings(settings_at(tmp_path, f" {new} , {old} "))
    assert cipher.key_ids == (Cipher([new]).key_id, Cipher([old]).key_id)
    assert cipher.source == "TRIPWIRE_ENCRYPTION_KEY"
    assert not key_file_path(settings_at(tmp_path)).exists()  # the key file is not even created


def test_an_empty_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="TRIPWIRE_ENCRYPTION_KEY is set but holds no key"):
        Cipher.from_settings(settings_at(tmp_path, " , "))


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = Cipher.generate_key()
    monkeypatch.setenv("TRIPWIRE_ENCRYPTION_KEY", key)
    settings = Settings(home=tmp_path)
    assert settings.encryption_key is not None
    assert Cipher.from_settings(settings).key_id == Cipher([key]).key_id
    assert key not in repr(settings)


def test_the_key_file_is_created_0600_on_first_use(tmp_path: Path, umask_022: None) -> None:
    settings = settings_at(tmp_path / "home")
    first = Cipher.from_settings(settings)
    path = key_file_path(settings)
    assert path == tmp_path / "home" / "encryption.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["encryption.key"]  # no temporary file left
    assert Cipher.from_settings(settings).key_id == first.key_id  # the same key next time
    assert first.source == f"the key file {path}"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_key_file_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "encryption.key"
    path.write_text(Cipher.generate_key() + "\n")
    path.chmod(mode)
    with pytest.raises(
        ConfigurationError, match=f"can be read or written by group/others \\(mode {mode:o}\\)"
    ):
        Cipher.from_settings(settings_at(tmp_path))
    with pytest.raises(ConfigurationError, match=f"chmod 600 {path}"):
        read_key_file(path)


def test_a_key_file_with_several_keys_and_comments(tmp_path: Path) -> None:
    new, old = Cipher.generate_key(), Cipher.generate_key()
    path = tmp_path / "encryption.key"
    path.write_text(f"# rotated on Monday\n{new}\n\n{old}\n")
    path.chmod(0o600)
    assert read_key_file(path) == [new, old]
    assert Cipher.from_settings(settings_at(tmp_path)).key_ids == Cipher([new, old]).key_ids


def test_a_key_file_without_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "encryption.key"
    path.write_text("# nothing here\n")
    path.chmod(0o600)
    with pytest.raises(ConfigurationError, match="holds no key"):
        Cipher.from_settings(settings_at(tmp_path))


def test_processes_starting_together_share_one_key(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "home" / "encryption.key"
    barrier = threading.Barrier(8)
    results: list[list[str]] = []

    def start() -> None:
        barrier.wait()
        results.append(read_key_file(path, create=True))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert all(keys == results[0] for keys in results)
    assert len(results[0]) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["encryption.key"]


def test_split_keys() -> None:
    assert split_keys("a, b\nc,,# note\n") == ["a", "b", "c"]
