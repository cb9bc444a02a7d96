"""Prometheus metrics of a node, read from Redis at each scrape.

Redis is the metrics store: every process of a node (ingress, workers, janitor, the
encoders' Senders too) counts into the node's ``stats`` hash, the Lua transitions count
room ends, rounds and bytes in the same step that makes them (so a retried or redone
transition is never counted twice, and a killed process loses nothing), and histograms are
bucket fields counted where the event happens (``observe`` in the Lua prelude). So the
numbers are the node's, exact across processes and across `serve` restarts, and an
operator can read the same with ``redis-cli HGETALL``. The gauges (queue, pending, pool,
workers) are read live.
"""
from __future__ import annotations

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from xferd.ops import nodeview
from xferd.state.room import BUCKETS, FAILURE_CLASSES
from xferd.state.store import Store

HISTOGRAMS = {
    "round_seconds": "Time from a round being queued (init, resume, publish) to its commit",
    "room_seconds": "Time from a room's first message to Success",
}
# stats fields that are plain node counters: field -> (metric name, help)
COUNTERS = {
    "rounds": ("xferd_rounds_total", "Rounds committed"),
    "bytes_written": ("xferd_bytes_written_total", "Bytes of committed rounds (a redone round counts once)"),
    "handed_back": ("xferd_reclaims_total", "Rounds handed back from a stopped worker"),
    "redone_rounds": ("xferd_rounds_redone_total", "Rounds written again after their writer was stopped"),
    "writers_fenced": ("xferd_writers_fenced_total", "Stale writers stopped (SIGKILL) before their round moved on"),
    "dead_letters": ("xferd_dead_letters_total", "Rounds moved to the dead-letter stream"),
    "stale_commits": ("xferd_stale_commits_total", "Commits refused because the round had moved on"),
    "worker_restarts": ("xferd_worker_restarts_total", "Worker processes restarted by serve"),
    "redis_errors": ("xferd_redis_errors_total", "Redis calls that failed and were retried"),
    "not_replicated": ("xferd_not_replicated_total", "Transitions no replica confirmed in time"),
    "replica_waits": ("xferd_replica_waits_total", "Transitions sent again waiting for a replica"),
    "statuses_repushed": ("xferd_statuses_repushed_total",
                          "Success pushed again: the worker that committed it died within two leases, "
                          "maybe before pushing it"),
}
FLOAT_COUNTERS = {
    "redis_outage_seconds": ("xferd_redis_outage_seconds_total", "Seconds processes waited for Redis"),
}
LABELLED = {  # stats field prefix -> (metric name, help, label)
    "ingress_messages:": ("xferd_ingress_messages_total", "Messages the ingress received, by kind", "kind"),
    "ingress_rejected:": ("xferd_ingress_rejected_total", "Messages the ingress refused, by reason", "reason"),
    "redis_refused:": ("xferd_redis_refused_writes_total",
                       "Redis calls refused (OOM, READONLY, MASTERDOWN, BUSY, MISCONF, NOREPLICAS) and retried, "
                       "by the refusal", "reason"),
}




def cumulative(fields: dict[str, str], name: str) -> tuple[list[tuple[str, float]], float]:
    """The histogram ``name``, kept as one field per bucket hit (``hist:NAME:LE``, LE as Lua
    prints it) and ``hist:NAME:sum_ms``: every bucket, cumulative, ending in +Inf; and the sum
    in seconds (with ``hist:NAME:sum``, seconds, as nodes before 2026-12 kept it)."""
    prefix = f"hist:{name}:"
    counts = {key[len(prefix):]: float(value) for key, value in fields.items() if key.startswith(prefix)}
    total_sum = counts.pop("sum", 0.0) + counts.pop("sum_ms", 0.0) / 1000
    by_bound = {float(le): count for le, count in counts.items()}
    buckets, running = [], 0.0
    for bound in (*BUCKETS, float("inf")):
        running += by_bound.get(float(bound), 0.0)
        buckets.append((floatToGoString(bound), running))
    return buckets, total_sum


class NodeCollector(Collector):
    """Everything ``/metrics`` shows for one node: the node view (``nodeview.read``, without
    its scan of the room records), one pipelined read of Redis a scrape."""

    def __init__(self, store: Store):
        self.store = store

    def collect(self):
        try:
            view = nodeview.read(self.store, with_rooms=False)
        except (redis.RedisError, OSError):
            yield GaugeMetricFamily("xferd_redis_up", "Whether the node's Redis answered this scrape", value=0)
            return
        yield GaugeMetricFamily("xferd_redis_up", "Whether the node's Redis answered this scrape", value=1)
        stats = view.stats
        ended = CounterMetricFamily("xferd_rooms_ended", "Rooms that reached Success or Failed",
                                    labels=["outcome", "failure_class"])
        ended.add_metric(["success", ""], float(stats.get("rooms_ended:Success:", 0)))
        for failure_class in FAILURE_CLASSES:
            ended.add_metric(["failed", failure_class], float(stats.get(f"rooms_ended:Failed:{failure_class}", 0)))
        yield ended
        for field, (name, text) in COUNTERS.items():
            yield CounterMetricFamily(name.removesuffix("_total"), text, value=float(stats.get(field, 0)))
        for field, (name, text) in FLOAT_COUNTERS.items():
            yield CounterMetricFamily(name.removesuffix("_total"), text, value=float(stats.get(field, 0)))
        for prefix, (name, text, label) in LABELLED.items():
            family = CounterMetricFamily(name.removesuffix("_total"), text, labels=[label])
            for field, value in sorted(stats.items()):
                if field.startswith(prefix):
                    family.add_metric([field[len(prefix):]], float(value))
            yield family
        for name, text in HISTOGRAMS.items():
            buckets, total_sum = cumulative(stats, name)
            yield HistogramMetricFamily(f"xferd_{name}", text, buckets=buckets, sum_value=total_sum)
        yield GaugeMetricFamily("xferd_queue_depth", "Round entries queued and not yet read by a worker",
                                value=view.queue_depth)
        yield GaugeMetricFamily("xferd_pending_entries", "Round entries read by a worker and not yet done",
                                value=view.pending)
        yield GaugeMetricFamily("xferd_oldest_pending_seconds", "Age of the oldest entry not yet done",
                                value=view.oldest_pending_s)
        pool = GaugeMetricFamily("xferd_pool_blocks", "Source pool blocks by state", labels=["state"])
        pool.add_metric(["free"], view.pool_free)
        pool.add_metric(["held"], max(0, view.pool_total - view.pool_free))
        yield pool
        yield GaugeMetricFamily("xferd_workers_live", "Worker lanes with a heartbeat in the last 5 s",
                                value=view.live_workers)
