"""The typed API: models of every version, manifest loading, and the shared constants.

Pure: no network, database or Kubernetes client (import-linter keeps it so).
"""
