"""Prometheus metrics of one server (its own registry: nothing global).

Counters and histograms are updated on the request path (a few microseconds); queue
lengths, loaded replicas and worker utilisation are read from the live state at scrape
time by a collector, so they cost nothing between scrapes.

Inference metrics (``infaas_requests``, latency, queue, drops) are shared by both transports:
a gRPC inference is counted there with the HTTP status it maps to. Each transport also counts
every request it answered once: ``infaas_http_requests{route,status}`` and
``infaas_grpc_requests{method,code}`` (the service's method names and ``grpc.StatusCode``
names: fixed sets).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from infaas_real.server.httplayer import HttpAccounting
    from infaas_real.server.state import LiveState

_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class _StateCollector(Collector):
    def __init__(self, state: LiveState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily("infaas_instance_queue_length", "Queries waiting or in service", labels=["variant", "worker"])
        replicas = GaugeMetricFamily("infaas_instance_replicas", "Loaded replicas", labels=["variant", "worker"])
        util = GaugeMetricFamily("infaas_worker_utilization", "Busy fraction over the last window", labels=["worker", "device"])
        workers = GaugeMetricFamily("infaas_workers", "Worker slots by state", labels=["state"])
        cost = GaugeMetricFamily("infaas_cost_usd", "Accrued cost of worker slots")
        by_state: dict[str, int] = {}
        for w in self.state.workers:
            by_state[str(w.state)] = by_state.get(str(w.state), 0) + 1
            for d, u in w.utilization.items():
                util.add_metric([str(w.id), d], u)
            for i in w.instances:
                queue.add_metric([i.variant.name, str(w.id)], i.queue_len)
                replicas.add_metric([i.variant.name, str(w.id)], i.mech.live_replicas)
        for s, n in by_state.items():
            workers.add_metric([s], n)
        cost.add_metric([], self.state.cost_usd(self.state.now_s))
        refused = CounterMetricFamily(
            "infaas_refused_actions", "Actions and query routes the control layer refused, by reason "
            "(the same reasons as summary.json's refused_actions)", labels=["reason"])
        for reason, n in sorted(self.state.refused.items()):
            refused.add_metric([reason], n)
        yield from (queue, replicas, util, workers, cost, refused)


class _HttpCollector(Collector):
    """The HTTP layer's counters (:class:`~infaas_real.server.httplayer.HttpAccounting`);
    every label value is from a bounded set (route classes, status codes, refusal reasons)."""

    def __init__(self, acc: HttpAccounting) -> None:
        self.acc = acc

    def collect(self) -> Iterator[Metric]:
        acc = self.acc
        req = CounterMetricFamily(
            "infaas_http_requests", "Every request the server received, once, by route class and the "
            "status it was answered with (499: the client left first), whoever answered it", labels=["route", "status"])
        for (route, status), n in sorted(acc.requests.items()):
            req.add_metric([route, status], n)
        refused = CounterMetricFamily(
            "infaas_http_connections_refused", "Connections closed at accept by a connection cap", labels=["reason"])
        for reason, n in sorted(acc.connections_refused.items()):
            refused.add_metric([reason], n)
        idle = CounterMetricFamily(
            "infaas_http_idle_connections_closed", "Connections closed by the header timeout before sending a byte")
        idle.add_metric([], acc.idle_closed)
        conns = GaugeMetricFamily("infaas_http_open_connections", "Open client connections")
        conns.add_metric([], acc.open_connections)
        yield from (req, refused, idle, conns)


class GrpcAccounting:
    """Counts of the gRPC front end (:mod:`infaas_real.server.grpc_server`): (method, code) -> RPCs."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}

    def count(self, method: str, code: str) -> None:
        key = (method, code)
        self.requests[key] = self.requests.get(key, 0) + 1


class _GrpcCollector(Collector):
    def __init__(self, acc: GrpcAccounting) -> None:
        self.acc = acc

    def collect(self) -> Iterator[Metric]:
        req = CounterMetricFamily(
            "infaas_grpc_requests", "Every gRPC request the servicer answered, once, by method and status code "
            "(CANCELLED: the client left first)", labels=["method", "code"])
        for (method, code), n in sorted(self.acc.requests.items()):
            req.add_metric([method, code], n)
        yield req


class ServerMetrics:
    def __init__(self, state: LiveState, http: HttpAccounting, grpc: GrpcAccounting | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "infaas_requests", "Inference requests of both transports by HTTP status (gRPC: the status its code "
            "maps from) and serving variant",
            ["status", "variant"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "infaas_request_latency_seconds", "Server-side latency of answered inferences",
            ["variant"], buckets=_LATENCY_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        self.queue = Histogram(
            "infaas_queue_seconds", "Time a query waited for a replica",
            ["variant"], buckets=_LATENCY_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        self.dropped = Counter(
            "infaas_dropped_queries", "Queries refused for lack of capacity (answered 503; dropped, a violation), by reason",
            ["reason"], registry=self.registry,
        )  # fmt: skip
        self.registry.register(_StateCollector(state))
        self.registry.register(_HttpCollector(http))
        self.registry.register(_GrpcCollector(grpc if grpc is not None else GrpcAccounting()))

    def render(self) -> bytes:
        out: bytes = generate_latest(self.registry)
        return out
