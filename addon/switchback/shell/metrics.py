"""Prometheus metrics: what the proxy did, by provider and outcome.

Metrics observe each call's result — its attempt records — after the fact,
so the attempt loop knows nothing of them; the status server exposes the
registry at /metrics. Labels carry provider names and reasons, never keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from ..engine.charge import Bill
    from ..engine.results import Result

MAX_MODELS = 500  # (provider, model) series of the usage metrics; later ones count as…
OTHER_MODELS = "other"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter("switchback_calls", "LLM calls handled, by the provider that "
                             "answered (or 'none') and outcome", ["provider", "outcome"],
                             registry=r)
        self.attempts = Counter("switchback_attempts", "Upstream attempts, by provider and "
                                "result (status code or failure)", ["provider", "result"],
                                registry=r)
        self.failovers = Counter("switchback_failovers", "Calls answered by another candidate "
                                 "than the first", registry=r)
        self.protocol_switches = Counter("switchback_protocol_switches", "Attempts retried in "
                                         "the other protocol", ["provider", "to"], registry=r)
        self.cooldowns = Counter("switchback_cooldowns", "Cooldowns started, by provider, "
                                 "scope and reason", ["provider", "scope", "reason"], registry=r)
        self.retries = Counter("switchback_retries", "Attempts that tried the candidate that "
                               "had just failed again, by provider and kind (transient: after "
                               "a short pause; hinted: after waiting out its hint)",
                               ["provider", "kind"], registry=r)
        self.probes = Counter("switchback_probes", "Live calls that probed a scope cooling on "
                              "Switchback's own backoff, by provider and result (recovered, "
                              "failed)", ["provider", "result"], registry=r)
        self.upstream_seconds = Histogram("switchback_upstream_seconds", "Upstream attempt "
                                          "time until the answer (whole) or commit (stream)",
                                          ["provider"], buckets=LATENCY_BUCKETS, registry=r)
        self.state_up = Gauge("switchback_state_backend_up", "1 while the state backend "
                              "answers (always, for this process's memory), else 0", registry=r)
        self.tokens = Counter("switchback_tokens", "Tokens of served calls, by provider, model "
                              "and kind (input, output, and the cached part of input, the "
                              "reasoning part of output)", ["provider", "model", "kind"],
                              registry=r)
        self.cost = Counter("switchback_cost_usd", "Cost of served calls in USD (priced "
                            "calls only)", ["provider", "model"], registry=r)
        self.unpriced = Counter("switchback_unpriced_calls", "Served calls whose model has no "
                                "known price", ["provider", "model"], registry=r)
        self.left_out = Counter("switchback_reasoning_left_out", "Sealed reasoning items "
                                "left out of a request: another account produced them",
                                ["provider"], registry=r)
        self._children: dict[tuple[Counter, tuple[str, ...]], Any] = {}
        self._models: set[tuple[str, str]] = set()
        self.first_byte_seconds = Histogram("switchback_first_byte_seconds", "Upstream "
                                            "time to the first response byte", ["provider"],
                                            buckets=LATENCY_BUCKETS, registry=r)

    def observe(self, result: Result, bill: Bill | None = None) -> None:
        """Count one call, each of its attempts, and its tokens and cost."""
        for attempt in result.attempts:
            provider = attempt.provider
            self.attempts.labels(provider, attempt.kind).inc()
            self.upstream_seconds.labels(provider).observe(attempt.ended - attempt.started)
            if attempt.first_byte is not None:
                self.first_byte_seconds.labels(provider).observe(attempt.first_byte)
            if attempt.cooldown and attempt.scope is not None and attempt.reason is not None:
                self.cooldowns.labels(provider, attempt.scope.value, attempt.reason.value).inc()
            if attempt.switched_to is not None:
                self.protocol_switches.labels(provider, attempt.switched_to.value).inc()
            if attempt.retry is not None:
                self.retries.labels(provider, attempt.retry.value).inc()
            if attempt.probe is not None:
                self.probes.labels(provider, attempt.probe.value).inc()
            if attempt.left_out:
                self.left_out.labels(provider).inc(attempt.left_out)
        served = result.served_by
        self.calls.labels(served.provider.name if served else "none", result.outcome.value).inc()
        if served is not None and result.failures:
            self.failovers.inc()
        usage = bill.usage if bill is not None else None
        if served is None or usage is None:
            return
        # Labelled children are kept: looking one up costs more than counting.
        key = (served.provider.name, served.model)
        if key not in self._models:  # a client may name any model: bound the series
            if len(self._models) >= MAX_MODELS:
                key = (key[0], OTHER_MODELS)
            else:
                self._models.add(key)
        for kind, count in usage.kinds():
            if count:
                self._child(self.tokens, (*key, kind)).inc(count)
        if bill.cost is None:
            self._child(self.unpriced, key).inc()
        else:
            self._child(self.cost, key).inc(bill.cost)

    def _child(self, counter: Counter, labels: tuple[str, ...]) -> Any:
        child = self._children.get((counter, labels))
        if child is None:
            child = self._children[counter, labels] = counter.labels(*labels)
        return child

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def totals(self) -> dict[str, float]:
        """Counter totals across labels, for the JSON status."""
        totals: dict[str, float] = {}
        for family in self.registry.collect():
            if family.type != "counter":
                continue
            totals[family.name] = sum(s.value for s in family.samples
                                      if s.name.endswith("_total"))
        return totals
