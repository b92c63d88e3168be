"""The engine that syncs one shard of one run; the same code in a pod and in `fleetsync run`."""
