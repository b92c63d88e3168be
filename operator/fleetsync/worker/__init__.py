"""The engine that syncs one shard of one run; the same code in a pod and in `fleetsync run`."""

from fleetsync.worker._aiohttp import import_aiohttp

import_aiohttp()
