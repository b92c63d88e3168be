"""A PostgreSQL DSN holds a password: check it before use, and keep it out of every message.

Two leaks this closes (issue 14): libpq quotes a malformed percent-escape of the URI —
``invalid percent-encoded token: "pa%ss"`` — which is the password itself; and an unencoded
``@`` in the password makes libpq split the URI at the first ``@``, so the error names the
password's tail as a host, and a redaction by shape (``://user:…@``) stops too early. So a
DSN is checked before it is used (a configuration error, exit 64, that quotes nothing), and
messages are redacted by *value* — the password as written and as libpq decodes it — as
well as by shape.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict

__all__ = ["DsnRedactor", "dsn_problem", "redact_dsn"]

_URI = re.compile(r"^postgres(?:ql)?://", re.IGNORECASE)
_HINT = "percent-encode the password in the URI (% as %25, @ as %40, : as %3A, / as %2F)"


def dsn_problem(dsn: str) -> str | None:
    """Why libpq would misread ``dsn``, or None. The reason never quotes the DSN."""
    if _URI.match(dsn):
        rest = _URI.sub("", dsn, count=1)
        authority = re.split(r"(?=[/?#])", rest, maxsplit=1)[0]
        if authority.count("@") > 1 or "@" in rest[len(authority) :]:
            return f"its user or password holds an unencoded '@' or '/': {_HINT}"
    try:
        conninfo_to_dict(dsn)
    except psycopg.Error:
        return f"is not a valid PostgreSQL connection string: {_HINT}"
    return None


def redact_dsn(text: str) -> str:
    """Remove passwords by shape: ``scheme://user:…@`` and ``password=…``."""
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.IGNORECASE)


class DsnRedactor:
    """Redacts one DSN's password from text, by value (as written and decoded) and shape."""

    def __init__(self, dsn: str) -> None:
        found: set[str] = set()
        try:
            password = conninfo_to_dict(dsn).get("password")
        except psycopg.Error:
            password = None
        if password:
            found.add(str(password))
        match = re.match(r"^postgres(?:ql)?://[^@/?#]*?:(.*)@[^@]*$", dsn, re.IGNORECASE | re.S)
        if match and match.group(1):
            found.update((match.group(1), unquote(match.group(1))))
        self._secrets = sorted(found, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact_dsn(text)
