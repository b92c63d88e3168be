"""Manifests: valid ones load into typed models, invalid ones name the field and the reason."""

from __future__ import annotations

import textwrap

import pytest

from fleetsync.api.manifest import load_manifest
from fleetsync.api.v1alpha1 import SyncJob, SyncSchedule
from fleetsync.errors import ManifestError

VALID = """
apiVersion: fleetsync.dev/v1alpha1
kind: SyncJob
metadata: {name: plants-0930, namespace: energy}
spec:
  fleet:
    kind: plant
    inventory:
      generate: {count: 7000, idTemplate: "p-{i}", template: {vendor: "v{i%3}"}}
  source:
    http: {url: "{vendor.baseUrl}/plants/{id}/realtime"}
    rateLimit: {requestsPerSecond: 25}
    mapping: {current_power_kw: $.data.power}
  sink:
    dynamodb: {table: plants, key: {PK: "PLANT#{id}", SK: "PLANT#{id}"}}
  write: {freshFor: 30m}
"""


def problems(text: str) -> dict[str, str]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(text)
    return dict(caught.value.problems)


def with_spec(extra: str) -> str:
    return VALID + textwrap.indent(textwrap.dedent(extra), "  ")


def test_valid_syncjob_loads_with_defaults() -> None:
    job = load_manifest(VALID)
    assert isinstance(job, SyncJob)
    assert job.spec.source.retry.max_attempts == 4
    assert job.spec.source.concurrency.mode == "adaptive"
    assert job.spec.write.fresh_for_seconds == 1800
    assert job.spec.sink is not None and job.spec.sink.dynamodb is not None
    assert job.spec.sink.dynamodb.batch_size == 25


def test_sink_defaults_to_embedded_sqlite() -> None:
    job = load_manifest(
        VALID.replace(
            '  sink:\n    dynamodb: {table: plants, key: {PK: "PLANT#{id}", SK: "PLANT#{id}"}}\n',
            "",
        )
    )
    assert isinstance(job, SyncJob)
    assert job.spec.resolved_sink.sqlite is not None
    assert job.spec.resolved_sink.sqlite.table == "plants"


def test_rate_limit_must_be_positive_and_names_the_path() -> None:
    text = VALID.replace("requestsPerSecond: 25", "requestsPerSecond: 0")
    assert problems(text) == {"spec.source.rateLimit.requestsPerSecond": "must be > 0"}


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        ("  bogus: 1\n", "spec.bogus", "is not a known field"),
        (
            "  sharding: {shards: 0}\n",
            "spec.sharding.shards",
            "must be between 1 and 1000, or auto",
        ),
        (
            "  sharding: {shards: 1001}\n",
            "spec.sharding.shards",
            "must be between 1 and 1000, or auto",
        ),
        ("  deadlineSeconds: -5\n", "spec.deadlineSeconds", "must be >= 1"),
        (
            "  write: {freshFor: soon}\n",
            "spec.write.freshFor",
            "'soon' is not a duration like 90s, 30m or 1h30m",
        ),
    ],
)
def test_field_errors_name_path_and_reason(change: str, path: str, reason: str) -> None:
    text = VALID.replace("  write: {freshFor: 30m}\n", "") + change
    assert problems(text)[path] == reason


def test_concurrency_bounds_are_ordered() -> None:
    text = VALID.replace(
        "rateLimit: {requestsPerSecond: 25}",
        "rateLimit: {requestsPerSecond: 25}\n    concurrency: {initial: 500, max: 10}",
    )
    assert problems(text) == {"spec.source.concurrency": "must satisfy min <= initial <= max"}


def test_exactly_one_inventory_source() -> None:
    text = VALID.replace(
        'generate: {count: 7000, idTemplate: "p-{i}", template: {vendor: "v{i%3}"}}',
        "generate: {count: 1}\n      file: {path: plants.csv}",
    )
    reason = problems(text)["spec.fleet.inventory"]
    assert reason.startswith("exactly one inventory source is required")
    assert reason.endswith("found file, generate")


def test_inline_inventory_is_bounded() -> None:
    items = ", ".join(f"{{id: p-{i}}}" for i in range(1001))
    text = VALID.replace(
        'generate: {count: 7000, idTemplate: "p-{i}", template: {vendor: "v{i%3}"}}',
        f"inline: [{items}]",
    )
    assert problems(text) == {"spec.fleet.inventory.inline": "must have at most 1000 entries"}


def test_bad_jsonpath_is_reported() -> None:
    text = VALID.replace("$.data.power", "'$[['")
    assert "current_power_kw" in problems(text)["spec.source.mapping"]


def test_wrong_kind_and_bad_yaml() -> None:
    assert problems(VALID.replace("kind: SyncJob", "kind: CronJob")) == {
        "kind": "must be one of SyncJob, SyncSchedule (got 'CronJob')"
    }
    assert "not valid YAML" in next(iter(problems("a: [1, 2").values()))


SCHEDULE = """
apiVersion: fleetsync.dev/v1alpha1
kind: SyncSchedule
metadata: {name: plants}
spec:
  schedule: "*/15 * * * *"
  timeZone: Europe/Berlin
  activeWindow: {start: "05:00", end: "20:00"}
  jobTemplate:
    spec:
      fleet: {inventory: {generate: {count: 10}}}
      source: {http: {url: "http://127.0.0.1/x/{id}"}}
"""


def test_schedule_loads_and_validates_cron_zone_and_window() -> None:
    schedule = load_manifest(SCHEDULE)
    assert isinstance(schedule, SyncSchedule)
    assert schedule.spec.concurrency_policy == "Forbid"
    assert problems(SCHEDULE.replace("Europe/Berlin", "Mars/Olympus")) == {
        "spec.timeZone": "'Mars/Olympus' is not an IANA time zone"
    }
    assert problems(SCHEDULE.replace('end: "20:00"', 'end: "05:00"')) == {
        "spec.activeWindow": "start and end must differ"
    }
    assert "spec.schedule" in problems(SCHEDULE.replace("*/15 * * * *", "every day"))
