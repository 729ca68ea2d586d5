"""Fernet encryption for sensitive columns, with keys that can be rotated.

Keys come from one environment variable, comma-separated, newest first: the newest encrypts,
every listed key decrypts (MultiFernet). To rotate: put a new key in front, run the re-encrypt
command (`dw rotate-keys DOMAIN`), then drop the old key.
"""

from __future__ import annotations

import dagster as dg
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from dw_platform.lib.fernet_batch import raw_key


def _key_texts(keys: str) -> list[str]:
    parts = [k.strip() for k in keys.split(",") if k.strip()]
    if not parts:
        raise ValueError("no Fernet key given: set a comma-separated list of keys, newest first")
    return parts


def parse_keys(keys: str) -> list[Fernet]:
    parts = _key_texts(keys)
    fernets = []
    for position, key in enumerate(parts, start=1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            # Never echo the key itself.
            raise ValueError(f"Fernet key #{position} is not 32 url-safe base64-encoded bytes") from None
    return fernets


class Cipher:
    """Encrypts text under the newest key; decrypts and re-encrypts under any listed key."""

    def __init__(self, keys: str):
        self._fernets = parse_keys(keys)
        self._primary = self._fernets[0]
        self._multi = MultiFernet(self._fernets)
        self.primary_key = raw_key(_key_texts(keys)[0])  # for whole-column encryption (fernet_batch)

    def encrypt(self, value: str | None) -> str | None:
        return None if value is None else self.encrypt_bytes(value.encode())

    def encrypt_bytes(self, value: bytes) -> str:
        return self._primary.encrypt(value).decode("ascii")

    def decrypt(self, token: str | None) -> str | None:
        return None if token is None else self.decrypt_bytes(token).decode()

    def decrypt_bytes(self, token: str) -> bytes:
        return self._multi.decrypt(token.encode("ascii"))

    def is_current(self, token: str) -> bool:
        """True when `token` is already encrypted under the newest key."""
        try:
            self._primary.decrypt(token.encode("ascii"))
            return True
        except InvalidToken:
            return False

    def rotate(self, token: str | None) -> str | None:
        """`token` under the newest key (unchanged plaintext); raises InvalidToken for unknown keys."""
        return None if token is None else self._multi.rotate(token.encode("ascii")).decode("ascii")


class FernetKeys(dg.ConfigurableResource):
    """A comma-separated list of Fernet keys, newest first (a secret: set it with dg.EnvVar)."""

    fernet_keys: str

    def cipher(self) -> Cipher:
        return Cipher(self.fernet_keys)
