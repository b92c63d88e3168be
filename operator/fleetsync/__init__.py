"""fleetsync keeps fleets in sync: vendor HTTP APIs into DynamoDB, PostgreSQL or SQLite.

The public surface is small on purpose: the CLI (``fleetsync``), the typed API in
:mod:`fleetsync.api`, and the sink protocol. Everything else is internal and may move.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
