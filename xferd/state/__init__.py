"""The Redis side: every key (``keys``), the room's declaration (statuses, transitions,
deadlines, record fields: ``room``), the Lua scripts that change state (``lua/``, loaded by
``scripts``) and ``Store``, the one door through which every process reads and changes
state. Connections, topology (one Redis, Cluster, Sentinel) and replica waits live here too."""
