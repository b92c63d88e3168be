"""Resolve Secret references (``{name, key}``) without ever logging their values.

In a pod, Secrets are mounted as files under ``$FLEETSYNC_SECRETS_DIR/<name>/<key>``
(``/var/run/secrets/fleetsync``). On a laptop the same reference is read from an
environment variable ``FLEETSYNC_SECRET_<NAME>_<KEY>`` (upper case, non-alphanumerics as
``_``) or from files under ``--secrets-dir``. Values are wrapped in :class:`SecretValue`,
whose ``repr`` and ``str`` never show them.

A key may be templated from an item (``{vendor}``), so it is untrusted: before any file is
touched the name must be a Secret name and the key a Secret key (``[-._a-zA-Z0-9]+``, not
``.`` or ``..``), which keeps every read inside ``<dir>/<name>/``. No error or log line
carries a value; a value that could not be read says so without its content.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote

from fleetsync.api.v1alpha1._rules import SECRET_NAME_PATTERN, is_secret_key
from fleetsync.errors import ManifestError, PayloadError

__all__ = ["REDACTED", "SecretResolver", "SecretValue", "check_reference", "env_name", "redact"]

_SECRET_NAME = re.compile(SECRET_NAME_PATTERN)
_MAX_SECRET_BYTES = 1024 * 1024  # the API server's limit for a whole Secret


class SecretValue:
    """A secret that prints as ``***``; call :meth:`reveal` at the point of use only."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretValue(***)"

    __str__ = __repr__


REDACTED = "***"


def _forms(secret: str) -> set[str]:
    """How a vendor may echo ``secret`` back: as sent, JSON-escaped, percent-encoded."""
    return {secret, json.dumps(secret)[1:-1], quote(secret, safe="")} - {""}


def redact(text: str, secrets: Iterable[str], *, cut: bool = False) -> str:
    """``text`` with every occurrence of each of ``secrets`` replaced by ``***``.

    ``cut``: the text is the start of something longer, so a secret may begin at its end;
    a tail that is the start of a secret is redacted too."""
    forms = sorted({form for secret in secrets for form in _forms(secret)}, key=len, reverse=True)
    for form in forms:
        text = text.replace(form, REDACTED)
    if cut:
        for form in forms:
            for size in range(min(len(form) - 1, len(text)), 0, -1):
                if text.endswith(form[:size]):
                    text = text[:-size] + REDACTED
                    break
    return text


def env_name(name: str, key: str) -> str:
    return "FLEETSYNC_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", f"{name}_{key}").upper()


def check_reference(name: str, key: str, *, field: str) -> None:
    """PayloadError naming ``field`` unless ``name``/``key`` are a valid Secret name and key.

    The values are not echoed: a key built from an item may hold anything."""
    if not _SECRET_NAME.match(name):
        raise PayloadError(f"{field}.name is not a valid Secret name; nothing was read")
    if not is_secret_key(key):
        raise PayloadError(
            f"{field}.key expands to an invalid Secret key "
            "(must match [-._a-zA-Z0-9]+, not '.' or '..'); nothing was read"
        )


class SecretResolver:
    def __init__(self, directory: str | None, environ: Mapping[str, str] | None = None) -> None:
        self._dir = Path(directory) if directory else None
        self._environ = os.environ if environ is None else environ
        self._cache: dict[tuple[str, str], SecretValue] = {}

    def get(self, name: str, key: str, *, field: str) -> SecretValue:
        """The value of Secret ``name`` key ``key``; ManifestError naming ``field`` if absent."""
        check_reference(name, key, field=field)
        if (name, key) in self._cache:
            return self._cache[(name, key)]
        value: str | None = self._environ.get(env_name(name, key))
        if value is None and self._dir is not None:
            value = self._read(self._dir / name / key, field=field)
        if value is None:
            file = (
                self._dir / name / key if self._dir is not None else f"<--secrets-dir>/{name}/{key}"
            )
            raise ManifestError(
                [(field, f"Secret {name!r} key {key!r} not found")],
                hint=f"create the Secret with that key in the cluster; on this machine set "
                f"{env_name(name, key)} or write the value to {file}",
            )
        secret = SecretValue(value)
        self._cache[(name, key)] = secret
        return secret

    @staticmethod
    def _read(path: Path, *, field: str) -> str | None:
        if not path.is_file():
            return None
        with path.open("rb") as handle:
            data = handle.read(_MAX_SECRET_BYTES + 1)
        if len(data) > _MAX_SECRET_BYTES:
            raise ManifestError([(field, f"Secret file {path} is larger than a Secret can be")])
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError:
            # The exception's text would quote the bytes around the bad one: the secret.
            raise ManifestError([(field, f"Secret file {path} is not UTF-8")]) from None
