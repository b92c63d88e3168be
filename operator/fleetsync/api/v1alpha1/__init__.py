"""fleetsync.dev/v1alpha1: the typed SyncJob and SyncSchedule, source of truth for the CRDs."""

from fleetsync.api.v1alpha1.meta import ObjectMeta
from fleetsync.api.v1alpha1.status import (
    Condition,
    Cost,
    FailedItem,
    FailedItems,
    FailureCause,
    ItemCounts,
    SyncJobStatus,
    VendorStatus,
)
from fleetsync.api.v1alpha1.syncjob import (
    Fleet,
    Inventory,
    RateLimit,
    Sink,
    Source,
    SyncJob,
    SyncJobSpec,
)
from fleetsync.api.v1alpha1.syncschedule import SyncSchedule, SyncScheduleSpec

__all__ = [
    "Condition",
    "Cost",
    "FailedItem",
    "FailedItems",
    "FailureCause",
    "Fleet",
    "Inventory",
    "ItemCounts",
    "ObjectMeta",
    "RateLimit",
    "Sink",
    "Source",
    "SyncJob",
    "SyncJobSpec",
    "SyncJobStatus",
    "SyncSchedule",
    "SyncScheduleSpec",
    "VendorStatus",
]
