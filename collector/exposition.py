"""Renders the collector's state as Prometheus metric families, fresh at every scrape.

A custom collector rather than module-level metric objects: a series that leaves the state
(stale or forgotten) is simply not yielded, with no bookkeeping to remove it.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from courierwatch.collector.state import Probe, State, check_key, started
from courierwatch.v1 import courierwatch_pb2 as pb

CHECK_LABELS = ["site", "probe", "target", "port", "check", "group"]
PROBE_LABELS = ["site", "probe"]
PHASES = ("dns", "connect", "tls", "first_byte", "total")


def outcome_label(outcome: int) -> str:
    """Label value of an outcome; a number this collector does not know is 'unknown'."""
    try:
        name = pb.Outcome.Name(outcome)
    except ValueError:
        return "unknown"
    return name.removeprefix("OUTCOME_").lower()


class StateCollector(Collector):
    def __init__(self, state: State) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        success = GaugeMetricFamily(
            "courierwatch_check_success",
            "1 if the latest run of the check worked, 0 if it failed.",
            labels=CHECK_LABELS,
        )
        outcome = GaugeMetricFamily(
            "courierwatch_check_outcome",
            "Always 1; the outcome label names the failure class of the latest run.",
            labels=[*CHECK_LABELS, "outcome"],
        )
        duration = GaugeMetricFamily(
            "courierwatch_check_duration_seconds",
            "Duration of each phase of the latest run of the check.",
            labels=[*CHECK_LABELS, "phase"],
        )
        last_run = GaugeMetricFamily(
            "courierwatch_check_last_run_timestamp_seconds",
            "When the latest run of the check started, in Unix time.",
            labels=CHECK_LABELS,
        )
        cert_expiry = GaugeMetricFamily(
            "courierwatch_tls_leaf_not_after_timestamp_seconds",
            "Expiry of the leaf certificate the endpoint presented, in Unix time.",
            labels=CHECK_LABELS,
        )
        results = CounterMetricFamily(
            "courierwatch_check_results",
            "Results received, by outcome.",
            labels=[*CHECK_LABELS, "outcome"],
        )
        up = GaugeMetricFamily(
            "courierwatch_probe_up",
            "1 while the probe has a stream open to this collector.",
            labels=PROBE_LABELS,
        )
        last_seen = GaugeMetricFamily(
            "courierwatch_probe_last_seen_timestamp_seconds",
            "When the probe was last heard from, in Unix time.",
            labels=PROBE_LABELS,
        )
        info = GaugeMetricFamily(
            "courierwatch_probe_info",
            "Always 1; software version and configuration digest of the probe.",
            labels=[*PROBE_LABELS, "version", "config_digest"],
        )
        applied = CounterMetricFamily(
            "courierwatch_probe_results_applied",
            "Results applied from the probe.",
            labels=PROBE_LABELS,
        )
        duplicates = CounterMetricFamily(
            "courierwatch_probe_results_duplicate",
            "Results received again (replays) and ignored.",
            labels=PROBE_LABELS,
        )
        state = self._state
        for probe in state.probes():
            who = [probe.site, probe.probe_id]
            up.add_metric(who, 1.0 if state.is_up(probe) else 0.0)
            last_seen.add_metric(who, probe.last_seen)
            info.add_metric([*who, probe.version, probe.config_digest], 1.0)
            applied.add_metric(who, probe.applied)
            duplicates.add_metric(who, probe.duplicates)
            for (key, code), count in probe.counts.items():
                results.add_metric([*_labels(probe, key), outcome_label(code)], count)
            for result in state.fresh(probe):
                labels = _labels(probe, check_key(result))
                success.add_metric(labels, 1.0 if result.outcome == pb.OUTCOME_OK else 0.0)
                outcome.add_metric([*labels, outcome_label(result.outcome)], 1.0)
                last_run.add_metric(labels, started(result))
                for phase in PHASES:
                    if result.phases.HasField(phase):
                        duration.add_metric([*labels, phase], getattr(result.phases, phase))
                if result.tls.HasField("not_after"):
                    cert_expiry.add_metric(labels, float(result.tls.not_after.seconds))
        yield from (success, outcome, duration, last_run, cert_expiry, results)
        yield from (up, last_seen, info, applied, duplicates)


def _labels(probe: Probe, key: tuple[str, int, str, str]) -> list[str]:
    target, port, check, group = key
    return [probe.site, probe.probe_id, target, str(port), check, group]
