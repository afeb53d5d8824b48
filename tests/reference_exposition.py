"""The reference rendering of /metrics: collector.exposition's table (FAMILIES) through
prometheus_client's own metric families and generate_latest(), with none of the hand-written
renderer's caches or text. The tests compare the two; the exposition benchmark times both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from courierwatch.collector.exposition import (
    CHECK,
    COLLECTOR,
    COUNT,
    FAMILIES,
    PROBE,
    ProbeView,
    Source,
    check_labels,
    probe_labels,
)
from courierwatch.collector.state import State, check_key, started
from courierwatch.common.results import courier_state


class ReferenceCollector(Collector):
    def __init__(self, state: State) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        for family in FAMILIES:
            kind = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
            metric = kind(family.name, family.help, labels=list(family.labels))
            for named, row in _rows(self._state, family.source):
                for own, value in family.read(*row):
                    labels = {**named, **dict(zip(family.own, own, strict=True))}
                    metric.add_metric([labels[name] for name in family.labels], value)
            yield metric


def _rows(state: State, source: Source) -> Iterator[tuple[dict[str, str], tuple[Any, ...]]]:
    """Each row a family of this source reads: the labels that name it, and what `read` takes."""
    if source is COLLECTOR:
        yield {}, (state,)
        return
    for probe in state.probes():
        if source is PROBE:
            view = ProbeView(state, probe, courier_state(state.fresh(probe)))
            yield dict(zip(PROBE.labels, probe_labels(probe), strict=True)), (view,)
        elif source is COUNT:
            for (key, code), count in probe.counts.items():
                yield dict(zip(COUNT.labels, check_labels(probe, key), strict=True)), (code, count)
        else:
            assert source is CHECK, source
            for result in state.fresh(probe):
                labels = check_labels(probe, check_key(result))
                yield dict(zip(CHECK.labels, labels, strict=True)), (result, started(result))


def render(state: State) -> bytes:
    registry = CollectorRegistry()
    registry.register(ReferenceCollector(state))
    return generate_latest(registry)
