"""SyncSchedule v1alpha1: SyncJobs on a cron, inside an active window, like CronJob for Jobs."""

from __future__ import annotations

import re
from typing import Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, field_validator, model_validator

from fleetsync.api.v1alpha1._base import Model
from fleetsync.api.v1alpha1.meta import ObjectMeta
from fleetsync.api.v1alpha1.status import Condition
from fleetsync.api.v1alpha1.syncjob import SyncJobSpec

_CRON_FIELD = r"[0-9*/,\-A-Za-z?]+"
_CRON_MACRO = r"@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
CRON_SHAPE = rf"^({_CRON_MACRO}|{_CRON_FIELD}(\s+{_CRON_FIELD}){{4}})$"
HH_MM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class ActiveWindow(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self.start != self.end", "message": "start and end must differ"}
            ]
        }
    )

    start: str = Field(pattern=HH_MM, description="HH:MM in the schedule's time zone.")
    end: str = Field(pattern=HH_MM, description="HH:MM; before start means overnight.")

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


class JobTemplateMeta(Model):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class JobTemplate(Model):
    metadata: JobTemplateMeta = Field(default_factory=JobTemplateMeta)
    spec: SyncJobSpec


class SyncScheduleSpec(Model):
    schedule: str = Field(pattern=CRON_SHAPE, description="Cron: 5 fields or @hourly etc.")
    time_zone: str = "UTC"
    active_window: ActiveWindow | None = None
    concurrency_policy: Literal["Forbid", "Allow", "Replace"] = "Forbid"
    starting_deadline_seconds: int | None = Field(None, ge=1)
    suspend: bool = False
    successful_jobs_history_limit: int = Field(3, ge=0, le=100)
    failed_jobs_history_limit: int = Field(3, ge=0, le=100)
    job_template: JobTemplate

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value

    @field_validator("schedule")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        return re.sub(r"\s+", " ", value.strip())


class ObjectRef(Model):
    name: str
    namespace: str | None = None
    uid: str | None = None


class SyncScheduleStatus(Model):
    last_schedule_time: str | None = None
    last_successful_time: str | None = None
    next_schedule_time: str | None = None
    active: list[ObjectRef] = Field(default_factory=list)
    skipped_outside_window: int = 0
    missed: int = 0
    last_run_now: str | None = Field(
        None, description="The last fleetsync.dev/run-now value a run was started for."
    )
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    active_count: int = Field(0, description="How many runs are active (a printer column).")


class SyncSchedule(Model):
    api_version: Literal["fleetsync.dev/v1alpha1"]
    kind: Literal["SyncSchedule"]
    metadata: ObjectMeta
    spec: SyncScheduleSpec
    status: SyncScheduleStatus | None = None
