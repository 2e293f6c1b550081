"""GPU workers on other machines, through Redis.

The bot stays the single source of order (its fair queue, quotas and SQLite ledger); Redis only carries one
batch at a time to each idle worker and the worker's events back. ``wire`` is what both sides write (keys,
messages: JSON plus raw PNG bytes, never pickle), ``hub`` the bot's side (which workers are alive, leases,
events; with ``liveness``, ``calls`` and ``events``) and ``RemoteEngine`` an ``Engine`` whose calls run on one
worker; ``node`` is the worker process (``python -m sdbot worker``), which sends its progress through
``progress``.
"""
