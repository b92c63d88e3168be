"""What a coordinator does, whoever runs it: ``fleetsync run`` locally or the controller.

Pure bookkeeping — budgets leased to shards, cumulative progress folded into a status, the
fleet-wide breaker verdict — with no server and no Kubernetes client, so both coordinators
share it and unit tests drive it with a fake clock.
"""
