"""The shipped FleetsyncRunTooSlow threshold agrees with the examples' own timings.

A scheduled example's run time follows from its manifest: the fleet's items per vendor over
that vendor's requestsPerSecond (schedules sharing a rateLimit.key share its rate). Each
must fit under the alert's threshold, which must fit under the example's deadline; then
``promtool test rules`` runs on cases made from those timings: every example schedule at
its expected duration stays quiet, a scheduled run past the threshold fires, and a one-off
SyncJob that is meant to take minutes (devices) does not.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from doc_runner import ROOT

from fleetsync.worker.template import expand_generated

pytestmark = pytest.mark.integration

ALERTS = ROOT / "charts" / "fleetsync" / "files" / "alerts.yaml"
# Fleet manifests only: examples/simulator/ holds the simulator's cluster objects.
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*/*.yaml") if p.parent.name != "simulator")


def rule() -> dict[str, Any]:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    (found,) = [r for r in rules if r["alert"] == "FleetsyncRunTooSlow"]
    return dict(found)


def threshold() -> float:
    expr = rule()["expr"]
    found = re.search(r"fleetsync_run_duration_seconds\)\s*>\s*([\d.]+)", expr)
    assert found, expr
    return float(found.group(1))


def schedules() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """name -> (metadata, job spec) of every SyncSchedule example."""
    found = {}
    for path in EXAMPLES:
        body = yaml.safe_load(path.read_text())
        if body["kind"] == "SyncSchedule":
            metadata = body["metadata"]
            found[metadata["name"]] = (metadata, body["spec"]["jobTemplate"]["spec"])
    return found


def load_per_limit(spec: dict[str, Any]) -> dict[str, tuple[int, float]]:
    """rate-limit key -> (items, requests per second) for one run."""
    gen = spec["fleet"]["inventory"]["generate"]
    items = [
        {k: expand_generated(v, i) for k, v in gen.get("template", {}).items()}
        for i in range(gen["count"])
    ]
    source = spec["source"]
    default = source.get("rateLimit", {})
    vendors = source.get("vendors")
    if vendors is None:
        key = default.get("key", source["http"]["url"])
        return {key: (len(items), float(default["requestsPerSecond"]))}
    per_vendor = Counter(item[vendors["by"]] for item in items)
    limits = {}
    for vendor, count in per_vendor.items():
        limit = vendors["items"][vendor].get("rateLimit", default)
        limits[limit.get("key", vendors["items"][vendor]["baseUrl"])] = (
            count, float(limit["requestsPerSecond"]),
        )  # fmt: skip
    return limits


def expected_seconds() -> dict[str, float]:
    """Each schedule's run time when every schedule sharing a rate-limit key runs at once."""
    shared: dict[str, int] = defaultdict(int)
    loads = {name: load_per_limit(spec) for name, (_, spec) in schedules().items()}
    for limits in loads.values():
        for key, (count, _) in limits.items():
            shared[key] += count
    return {
        name: max(shared[key] / rate for key, (_, rate) in limits.items())
        for name, limits in loads.items()
    }


def test_every_example_schedule_fits_under_the_alert_and_the_alert_under_its_deadline() -> None:
    bound = threshold()
    timings = expected_seconds()
    assert set(timings) == {"plants", "cities-hourly", "cities-daily"}
    for name, seconds in timings.items():
        assert seconds < bound, f"{name}: runs take ~{seconds:.0f} s, the alert fires past {bound}"
        deadline = schedules()[name][1].get("deadlineSeconds")
        assert deadline is None or deadline > bound, (name, deadline)
    plants = (ROOT / "examples/plants/syncschedule.yaml").read_text()
    documented = [int(s) for s in re.findall(r"~(\d+) s\b", plants)]
    assert documented == [round(timings["plants"])], "the manifest's comment is out of date"


def promtool_case(timings: dict[str, float], bound: float) -> dict[str, Any]:
    """Two promtool tests: the example schedules at their timings plus a one-off SyncJob of
    400 s stay quiet; a scheduled run 5 s past the bound fires."""
    quiet = [
        {"series": 'fleetsync_run_duration_seconds{namespace="iot",owner="devices"}',
         "values": "400x15"},
    ]  # fmt: skip
    for name, seconds in timings.items():
        labels = f'namespace="{schedules()[name][0]["namespace"]}",owner="{name}"'
        quiet += [
            {"series": f"fleetsync_run_duration_seconds{{{labels}}}",
             "values": f"{math.ceil(seconds)}x15"},
            {"series": f"fleetsync_schedule_missed_runs{{{labels}}}", "values": "0x15"},
        ]  # fmt: skip
    labels = 'namespace="energy",owner="plants"'
    slow = [
        {"series": f"fleetsync_run_duration_seconds{{{labels}}}",
         "values": f"{math.floor(bound) + 5}x15"},
        {"series": f"fleetsync_schedule_missed_runs{{{labels}}}", "values": "0x15"},
    ]  # fmt: skip
    labels_of = {"namespace": "energy", "owner": "plants"}
    annotations = {
        k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels_of[m.group(1)], v)
        for k, v in rule()["annotations"].items()
    }
    fired = {"exp_labels": {"severity": "warning", **labels_of}, "exp_annotations": annotations}
    return {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": series, "alert_rule_test": [
                {"eval_time": "10m", "alertname": "FleetsyncRunTooSlow", "exp_alerts": expected}
            ]}
            for series, expected in ((quiet, []), (slow, [fired]))
        ],
    }  # fmt: skip


def test_promtool_on_the_example_schedules_timings(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: .ci/run installs Debian's prometheus package"
    case = tmp_path / "examples_test.yaml"
    case.write_text(yaml.safe_dump(promtool_case(expected_seconds(), threshold())))
    done = subprocess.run(
        [promtool, "test", "rules", str(case)], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
