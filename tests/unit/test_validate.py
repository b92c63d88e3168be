"""``fleetsync validate`` catches what it can know before a run (issue 13 item 5): a template
naming a field the inventory's items lack (exit 64 naming the template and the field), and a
manifest without ``spec.sink`` says where its data will go."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetsync.cli import main


def manifest(tmp: Path, **spec: Any) -> Path:
    body = {
        "apiVersion": "fleetsync.dev/v1alpha1",
        "kind": "SyncJob",
        "metadata": {"name": "plants"},
        "spec": {
            "fleet": {"inventory": {"inline": [{"id": "p-1", "vendor": "a"}]}},
            "source": {"http": {"url": "http://api.example/plants/{id}"},
                       "mapping": {"power": "$.power"}},
            **spec,
        },
    }  # fmt: skip
    path = tmp / "syncjob.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_a_manifest_without_a_sink_is_valid_and_says_where_data_goes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(manifest(tmp_path))]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "SyncJob/plants: valid"
    where = tmp_path.resolve() / "fleetsync.db"
    assert err.strip() == f"note: spec.sink is not set: data goes to SQLite {where}, table items"


@pytest.mark.parametrize(
    ("spec", "field", "name"),
    [
        ({"source": {"http": {"url": "http://api.example/plants/{idd}"},
                     "mapping": {"power": "$.power"}}}, "spec.source.http.url", "idd"),
        ({"source": {"http": {"url": "http://api.example/{id}", "headers": {"X-Site": "{site}"}},
                     "mapping": {"power": "$.power"}}}, "spec.source.http.headers.X-Site", "site"),
        ({"sink": {"dynamodb": {"table": "plants", "key": {"PK": "PLANT#{plant}"}}}},
         "spec.sink.dynamodb.key.PK", "plant"),
    ],
)  # fmt: skip
def test_a_template_naming_an_absent_field_is_64_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: Any, field: str, name: str
) -> None:
    assert main(["validate", str(manifest(tmp_path, **spec))]) == 64
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: {field}: names {{{name}}}, which none of the first 1 items has")
    assert "(fix: " in line and out == ""


def test_run_with_json_output_gives_the_error_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = {"http": {"url": "http://api.example/plants/{idd}"}, "mapping": {"power": "$.p"}}
    path = manifest(tmp_path, source=source)
    code = main(["run", str(path), "--output", "json", "--state-dir", str(tmp_path / "st")])
    assert code == 64
    out, _ = capsys.readouterr()
    error = json.loads(out.strip().splitlines()[-1])["error"]
    assert error["field"] == "spec.source.http.url" and "{idd}" in error["reason"]
