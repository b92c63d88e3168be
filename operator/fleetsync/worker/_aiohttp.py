"""aiohttp, imported without loading the system's CA bundle twice for nothing.

When imported, aiohttp builds two module-level SSL contexts (``aiohttp.connector``: one
verified, one not), each calling ``set_default_verify_paths``: with OpenSSL 3 each load of
the bundle costs ~25 ms, 0.05 s of every worker process's and every ``fleetsync run``'s
start, a tenth of a 500-item run. fleetsync's requests never use those two contexts: every
https request carries the one :meth:`fleetsync.worker.fetch.Fetcher.tls_for` builds
(certifi's roots), and httpx_aiohttp's transport passes its own. So aiohttp is imported
with that one method stubbed: its verified default is made with ``CERT_REQUIRED`` and
hostname checks as always, but no roots, so anything that did use it would fail closed (no
certificate verifies), never pass unverified. The stub lives only for the import, and
only if aiohttp is not loaded yet (kopf, or a test, may have imported it first: then this
does nothing).
"""

from __future__ import annotations

import importlib
import ssl
import sys
import threading

__all__ = ["import_aiohttp"]

_lock = threading.Lock()


def import_aiohttp() -> None:
    if "aiohttp" in sys.modules:
        return
    with _lock:
        if "aiohttp" in sys.modules:
            return
        own = vars(ssl.SSLContext).get("set_default_verify_paths")  # None: inherited
        ssl.SSLContext.set_default_verify_paths = _no_roots  # type: ignore[method-assign]
        try:
            importlib.import_module("aiohttp")
        finally:
            if own is None:
                del ssl.SSLContext.set_default_verify_paths
            else:
                ssl.SSLContext.set_default_verify_paths = own  # type: ignore[method-assign]


def _no_roots(self: ssl.SSLContext) -> None:
    """Load nothing: see the module's docstring."""
