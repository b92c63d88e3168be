"""Resolve Secret references (``{name, key}``) without ever logging their values.

In a pod, Secrets are mounted as files under ``$FLEETSYNC_SECRETS_DIR/<name>/<key>``
(``/var/run/secrets/fleetsync``). On a laptop the same reference is read from an
environment variable ``FLEETSYNC_SECRET_<NAME>_<KEY>`` (upper case, non-alphanumerics as
``_``) or from files under ``--secrets-dir``. Values are wrapped in :class:`SecretValue`,
whose ``repr`` and ``str`` never show them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from fleetsync.errors import ManifestError

__all__ = ["SecretResolver", "SecretValue", "env_name"]


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


def env_name(name: str, key: str) -> str:
    return "FLEETSYNC_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", f"{name}_{key}").upper()


class SecretResolver:
    def __init__(self, directory: str | None, environ: Mapping[str, str] | None = None) -> None:
        self._dir = Path(directory) if directory else None
        self._environ = os.environ if environ is None else environ
        self._cache: dict[tuple[str, str], SecretValue] = {}

    def get(self, name: str, key: str, *, field: str) -> SecretValue:
        """The value of Secret ``name`` key ``key``; ManifestError naming ``field`` if absent."""
        if (name, key) in self._cache:
            return self._cache[(name, key)]
        value: str | None = self._environ.get(env_name(name, key))
        if value is None and self._dir is not None:
            path = self._dir / name / key
            if path.is_file():
                value = path.read_text(encoding="utf-8").strip()
        if value is None:
            raise ManifestError(
                [(field, f"Secret {name!r} key {key!r} not found (set {env_name(name, key)})")]
            )
        secret = SecretValue(value)
        self._cache[(name, key)] = secret
        return secret
