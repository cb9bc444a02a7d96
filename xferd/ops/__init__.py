"""Operating a node: Prometheus metrics, health, the monitor port and its status page, the
terminal views (``xferd status``, ``rooms``, ``top``, ``inspect``), drain, per-room logs."""
