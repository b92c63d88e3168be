"""The Kubernetes controller: SyncJob and SyncSchedule reconciled by kopf.

``handlers`` is the thin kopf edge; ``plan``, ``build`` and ``conditions`` are pure functions
from a typed spec (and observed state) to the desired objects and status.
"""
