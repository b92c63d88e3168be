"""What the fuzz suites share: the hypothesis profiles and the strategies.

Profiles: ``ci`` (the default: a fixed seed through ``derandomize``, bounded examples, so the
directory runs in well under a minute and a failure reproduces on every machine) and
``soak`` (many random examples, for ``make soak``); pick one with
``FLEETSYNC_FUZZ_PROFILE=soak``. The soak profile enforces the bound as a deadline: one
example (a manifest, a payload) is handled in under a second. CI's profile does not: a timed
check on a shared, loaded machine fails by scheduling, not by fleetsync (examples take
milliseconds; the bound is a thousand times that).

Strategies: JSON values with the awkward corners (NaN, huge numbers, lone surrogates, deep
nesting) and the shipped example manifests to mutate. (Not a ``conftest.py``: the unit
suite imports its own ``conftest`` by name.)
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
    database=None,
)
settings.register_profile(
    "soak",
    max_examples=5_000,
    deadline=timedelta(seconds=1),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile(os.environ.get("FLEETSYNC_FUZZ_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[2]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", "{id}", "{", "}", "../..", "$.x", "\ud800", "\r\n", "auto", "0"]),
)

json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=25,
)


def deep(depth: int, leaf: object = 1) -> object:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def example_documents() -> list[dict[str, Any]]:
    """Every SyncJob / SyncSchedule document under examples/."""
    documents = []
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") in ("SyncJob", "SyncSchedule"):
                documents.append(document)
    assert documents, "examples/ holds no manifests"
    return documents


EXAMPLES = example_documents()
EXAMPLE_TEXTS = [
    path.read_text()
    for path in sorted((ROOT / "examples").rglob("*.yaml"))
    if "kind: Sync" in path.read_text()
]
