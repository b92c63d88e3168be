"""Hypothesis profiles for the fuzz suites: ``ci`` (the default: a fixed seed through
``derandomize``, bounded examples, so the directory runs in well under a minute and a
failure reproduces on every machine) and ``soak`` (many random examples, for ``make soak``).

Pick one with ``FLEETSYNC_FUZZ_PROFILE=soak``."""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=100,
    deadline=timedelta(seconds=1),
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
