"""``fleetsync run``: a whole run on one machine, shards as local processes, no cluster."""
