"""Prometheus metrics, one registry per app (no module globals).

    routes --observe(timings, usage)--> histograms / counters
    GET /metrics --runtime.stats() on the engine thread--> EngineCollector snapshot --> text format
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from botframework.scheduler.output import Usage

_LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_GAUGES = {
    "num_waiting": ("botframework_queue_depth", "requests waiting for a slot"),
    "num_running": ("botframework_running_sequences", "sequences generating tokens"),
    "num_prefilling": ("botframework_prefilling_sequences", "sequences computing their prompt"),
    "num_busy_slots": ("botframework_busy_slots", "KV slots owned by a request"),
    "num_session_slots": ("botframework_session_slots", "KV slots holding a session's state"),
    "num_cells_used": ("botframework_kv_cells_used", "KV cache cells in use"),
    "num_cached_tokens": ("botframework_kv_cached_tokens", "tokens of the slots' cached prefixes (cells shared "
                          "between slots count once in kv_cells_used)"),
    "num_uncached_kv_tokens": ("botframework_kv_uncached_tokens", "KV positions an idle slot holds past its "
                               "cached prefix: 0 unless cells leak"),
    "num_stored_sessions": ("botframework_stored_sessions", "sessions saved outside the KV cache"),
    "stored_session_bytes": ("botframework_stored_session_bytes", "host RAM of the sessions saved outside the KV "
                             "cache (at most session_ram_bytes; the rest spills to disk)"),
    "stored_prefix_bytes": ("botframework_stored_prefix_bytes", "host RAM of idle prompt caches (at most "
                            "prefix_cache_mb)"),
}
_COUNTERS = {
    "num_generated_tokens": ("botframework_generated_tokens", "tokens generated"),
    "num_prompt_tokens": ("botframework_prompt_tokens", "prompt tokens admitted"),
    "num_prefix_hit_tokens": ("botframework_prefix_cache_hit_tokens", "prompt tokens reused from the KV cache"),
    "num_steps": ("botframework_engine_steps", "engine steps (one llama_decode each)"),
    "num_runs": ("botframework_engine_runs", "native calls that ran several engine steps for whole answers"),
    "num_draft_tokens": ("botframework_draft_tokens", "speculative draft tokens verified"),
    "num_accepted_draft_tokens": ("botframework_draft_accepted_tokens", "speculative draft tokens accepted"),
}
_TIMES_MS = {
    "decode_ms": ("botframework_decode_seconds", "engine thread time in llama_decode"),
    "sample_ms": ("botframework_sample_seconds", "engine thread time sampling"),
    "schedule_ms": ("botframework_schedule_seconds", "engine thread time in Python: scheduling and publishing"),
    "draft_ms": ("botframework_draft_seconds", "engine thread time in the draft model (models with one)"),
}


class EngineCollector(Collector):
    """Reports the last snapshot of each declared model's scheduler stats, taken by the /metrics
    route: one series per model (label `model`)."""

    def __init__(self) -> None:
        self.snapshots: dict[str, dict[str, float]] = {}  # model name -> stats ({} if not loaded)

    def collect(self) -> Iterator[Metric]:
        families: list[tuple[dict[str, tuple[str, str]], type[GaugeMetricFamily | CounterMetricFamily], float]]
        families = [(_GAUGES, GaugeMetricFamily, 1.0), (_COUNTERS, CounterMetricFamily, 1.0),
                    (_TIMES_MS, CounterMetricFamily, 1e-3)]
        for table, kind, scale in families:
            for key, (name, doc) in table.items():
                family = kind(name, doc, labels=["model"])
                for model, snap in self.snapshots.items():
                    if key in snap:
                        family.add_metric([model], snap[key] * scale)
                yield family
        loaded = GaugeMetricFamily("botframework_model_loaded", "1 when the model is loaded and serving",
                                   labels=["model"])
        memory = GaugeMetricFamily("botframework_model_memory_bytes", "the loaded model's memory (weights + KV cache)",
                                   labels=["model"])
        for model, snap in self.snapshots.items():
            loaded.add_metric([model], snap.get("model_loaded", 0))
            memory.add_metric([model], snap.get("memory_bytes", 0))
        yield loaded
        yield memory


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.engine = EngineCollector()
        self.registry.register(self.engine)
        self.ttft = Histogram("botframework_time_to_first_token_seconds", "arrival to first generated token",
                              buckets=_LATENCY_BUCKETS_S, registry=self.registry)
        self.latency = Histogram("botframework_request_seconds", "arrival to the last token",
                                 buckets=_LATENCY_BUCKETS_S, registry=self.registry)
        self.requests = Counter("botframework_requests_finished", "generation requests finished",
                                registry=self.registry)
        self.completion_tokens = Counter("botframework_completion_tokens", "tokens returned to clients",
                                         registry=self.registry)
        self.direct_chunks = Counter("botframework_sse_direct_chunks",
                                     "streamed chunks the engine thread wrote to the client's socket",
                                     registry=self.registry)
        self.direct_native_tokens = Counter("botframework_sse_direct_native_tokens",
                                            "streamed tokens whose chunks a native run of steps wrote to the "
                                            "client's socket itself", registry=self.registry)
        self.direct_handed_back = Counter("botframework_sse_direct_handed_back",
                                          "direct writes the socket did not take whole: finished by the event loop",
                                          registry=self.registry)

    def observe(self, timings: dict[str, float], usage: Usage | None) -> None:
        self.requests.inc()
        if "ttft_ms" in timings:
            self.ttft.observe(timings["ttft_ms"] / 1e3)
        if "total_ms" in timings:
            self.latency.observe(timings["total_ms"] / 1e3)
        if usage is not None:
            self.completion_tokens.inc(usage.completion_tokens)
