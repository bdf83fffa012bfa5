"""What a benchmark run measured (unlock attempts, rentals, the storm's borrows) and the summary made of it:
the figures of summary.json, details.json and the charts that device_emulator.bench.report writes."""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from device_emulator.bench import cpu, freshness, probes
from device_emulator.bench.report import histogram_svg, line_svg, ratio, say, summarize, write_report
from device_emulator.bench.swarm import Swarm

if TYPE_CHECKING:
    from device_emulator.bench.run import Bench

STORM_ANSWER_BUDGET_MS = 5000.0  # an unlock during a connect storm is answered within 5 s, with a reason if need be
STORM_KEYS = ("storm_connected_s", "storm_online_s", "storm_rent_again_s", "storm_unlocks_over_5s")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One unlock request: when it started (monotonic), how long the answer took, its error code (None: the
    bank was ejected and the rental is active) and the correlation id it was sent with."""

    started: float
    took_ms: float
    code: str | None
    correlation_id: str


def errors_but_ejected(attempts: Sequence[Attempt], ejected: Mapping[str, object]) -> int:
    """Unlocks answered with an error although the cabinet received the eject sent for that very request
    (`ejected` is keyed by the command's correlation id): the 504-while-ejected class; 0 when the platform is
    right (a cabinet that answered an eject means the bank is out, whatever the user was told)."""
    return sum(1 for a in attempts if a.code is not None and a.correlation_id in ejected)


@dataclass
class Results:
    unlock_ms: list[float] = field(default_factory=list)
    eject_seen_ms: list[float] = field(default_factory=list)
    billing_stop_ms: list[float] = field(default_factory=list)
    billing_parts_ms: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    unlock_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    stop_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    unlocks_started: int = 0
    unlocks_skipped: int = 0  # the pacer found no idle user or cabinet
    users_retired: int = 0  # left out after an error (they may hold a rental the platform completed late)
    attempts: list[Attempt] = field(default_factory=list)
    handed_back: int = 0  # error answers whose ejected bank the user handed back (see Bench.hand_back)
    timeline: list[dict[str, float]] = field(default_factory=list)
    # rentals borrowed and returned (billing stopped), per maker of the cabinet (--volinks)
    cycles_by_protocol: collections.Counter[str] = field(default_factory=collections.Counter)


def cost_and_errors(bench: Bench) -> dict[str, Any]:
    """The cost figures (device_emulator.bench.cpu), provisioning time, user preparation and the unlock
    errors by code, with those whose cabinet did eject the bank."""
    w = bench.cpu_windows
    costs = cpu.attribute(w.get("idle"), w.get("telemetry_only"), w.get("mixed"), w.get("polls"))
    bench.details["cpu"] = {
        "counted": {name: pids for name, pids in bench.platform.roots.items()},
        "notes": list(bench.platform.notes),
        "windows": cpu.describe(w.items()),
        "per_group_pct_of_core": bench.cpu_group_pct,
        "figures": costs,
    }
    r = bench.results
    provision = bench.details.get("provision")
    users = bench.details.get("users", {})
    return costs | {
        "provision_s": provision["seconds"] if provision else None,
        "users_prepare_s": users.get("prepare_s"),
        "users_registered": users.get("registered"),
        "unlock_errors_by_code": dict(sorted(r.unlock_errors.items())),
        "unlock_error_but_ejected": errors_but_ejected(r.attempts, bench.ejected),
        "unlock_errors_bank_handed_back": r.handed_back,
    }


def finish(
    bench: Bench,
    *,
    floors: dict[str, Any],
    watch: probes.TelemetryWatch,
    swarm: Swarm,
    sampler: probes.ProcessSampler,
    load: tuple[float, float],
    devices_connected: int,
    hb_sent: int,
    drain_s: float,
    online: int,
    connect_s: float,
    restart: dict[str, Any] | None,
    banks: Swarm | None = None,
) -> dict[str, Any]:
    r = bench.results
    duration = load[1] - load[0]
    seen_in_load = sum(1 for t in watch.seen_times if bench.t0 + load[0] <= t <= bench.t0 + load[1])
    unlock = summarize(r.unlock_ms)
    eject = summarize(r.eject_seen_ms)
    stop = summarize(r.billing_stop_ms)
    lag = summarize(watch.lags_ms)

    def floor(name: str, key: str) -> float | None:
        v = floors.get(name, {}).get(key)
        return float(v) if isinstance(v, int | float) else None

    mqtt_p50, kafka_p50 = floor("mqtt_round_trip_ms", "p50"), floor("kafka_round_trip_ms", "p50")
    sub_rate = floor("aiomqtt_subscriber", "msgs_per_s")
    telemetry_rate = round(seen_in_load / duration, 1) if duration > 0 else 0.0
    summary: dict[str, Any] = {
        "devices_target": len(swarm.devices),
        "devices_connected": devices_connected,
        "devices_online_in_device_svc": online,
        "connect_all_s": round(connect_s, 1),
        "unlocks_ok": len(r.unlock_ms),
        "unlock_errors": sum(r.unlock_errors.values()),
        "unlocks_skipped_no_idle_user_or_cabinet": r.unlocks_skipped,
        "users_retired_after_errors": r.users_retired,
        "rentals_completed_by_protocol": dict(r.cycles_by_protocol),
        "unlock_rate_achieved_per_s": round(len(r.unlock_ms) / duration, 2) if duration else 0,
        "unlock_p50_ms": unlock["p50"],
        "unlock_p99_ms": unlock["p99"],
        "unlock_eject_seen_p50_ms": eject["p50"],
        "unlock_eject_seen_p99_ms": eject["p99"],
        "billing_stop_p50_ms": stop["p50"],
        "billing_stop_p99_ms": stop["p99"],
        "billing_stop_errors": sum(r.stop_errors.values()),
        "telemetry_sent": watch.sent,
        "telemetry_sent_per_s": round(hb_sent / duration, 1) if duration else 0,
        "telemetry_msgs_per_s": telemetry_rate,
        "telemetry_lost": watch.sent - watch.seen,  # unseen when the wait ended: lost or later than that
        "telemetry_drain_s": round(drain_s, 1),
        "telemetry_lag_p50_ms": lag["p50"],
        "telemetry_lag_p99_ms": lag["p99"],
        "floor_mqtt_rtt_p50_ms": mqtt_p50,
        "floor_kafka_rtt_p50_ms": kafka_p50,
        "floor_mqtt_subscriber_msgs_per_s": floor("mqtt_subscriber", "msgs_per_s"),
        "floor_aiomqtt_subscriber_msgs_per_s": sub_rate,
        "ratio_unlock_p50_to_mqtt_rtt": ratio(unlock["p50"], mqtt_p50),
        "ratio_unlock_p50_to_kafka_rtt": ratio(unlock["p50"], kafka_p50),
        "ratio_billing_stop_p50_to_kafka_rtt": ratio(stop["p50"], kafka_p50),
        "ratio_telemetry_lag_p50_to_kafka_rtt": ratio(lag["p50"], kafka_p50),
        "ratio_telemetry_rate_to_subscriber_floor": (
            round(telemetry_rate / sub_rate, 4) if sub_rate and telemetry_rate else None
        ),
    }
    summary |= cost_and_errors(bench)
    if restart is not None:
        summary["broker_restart_all_back_s"] = restart.get("all_back_s_after_sigterm")
        summary |= {
            "storm_connected_s": restart.get("all_back_s_after_sigterm"),
            "storm_online_s": restart.get("online_s_after_sigterm"),
            "storm_rent_again_s": restart.get("rent_again_s_after_sigterm"),
            "storm_unlocks": restart.get("unlocks"),
            "storm_unlocks_over_5s": restart.get("unlocks_over_5s"),
            "storm_unlock_error_but_ejected": restart.get("unlock_error_but_ejected"),
        }
    emulated = freshness.swarm_banks(banks) if banks is not None else []
    samples = bench.probe.samples if bench.probe is not None else []
    scale = bench.args.time_scale
    summary.update(
        freshness.freshness_summary(
            samples,
            banks=len(emulated),
            time_scale=scale,
            window=(load[0], math.inf),
            longest_gap_s=max((b.longest_gap_s for b in emulated), default=None) if emulated else None,
        )
    )
    if bench.probe is not None:
        bench.details["freshness"] = {
            "schedule": dataclasses.asdict(
                freshness.ReportSchedule(bench.args.bank_report_every_s, bench.args.bank_jitter, scale)
            ),
            "reports_sent": sum(b.reports_sent for b in emulated),
            "bank_connects": banks.stats.connects if banks is not None else 0,
            "probe_request_ms": summarize(bench.probe.request_ms),
            "probe_errors": bench.probe.errors,
            "timeline": [
                {"t": round(x.t, 2), "idle": x.idle, "unknown": x.unknown, "oldest_real_s": x.oldest_age_s}
                for x in samples
            ],
        }
        if bench.probe.errors:
            bench.notes.append(f"{len(bench.probe.errors)} freshness readings failed, e.g. {bench.probe.errors[0]}")
    procs = sampler.summary(since=load[0])
    bench.details.update(
        floors=floors,
        unlock=unlock,
        unlock_eject_seen=eject,
        billing_stop=stop,
        billing_stop_parts={k: summarize(v) for k, v in r.billing_parts_ms.items()},
        unlock_errors=dict(r.unlock_errors),
        billing_stop_errors=dict(r.stop_errors),
        telemetry={"sent": watch.sent, "seen": watch.seen, "other_events": watch.foreign, "lag": lag},
        swarm=dataclasses.asdict(swarm.stats),
        processes=procs,
        timeline=r.timeline,
        broker_restart=restart,
        notes=bench.notes,
    )
    charts = {
        "latency": histogram_svg(
            "Latency distributions",
            {
                "unlock (HTTP)": r.unlock_ms,
                "eject seen by device": r.eject_seen_ms,
                "billing stop": r.billing_stop_ms,
                "telemetry lag": watch.lags_ms[:: max(1, len(watch.lags_ms) // 20000)],
            },
        ),
        "throughput": line_svg(
            "Throughput over time",
            {
                "heartbeats sent/s": [(p["t"], p["hb_sent_per_s"]) for p in r.timeline],
                "telemetry on Kafka/s": [(p["t"], p["telemetry_seen_per_s"]) for p in r.timeline],
                "unlocks/s x100": [(p["t"], p["unlocks_per_s"] * 100) for p in r.timeline],
            },
            "seconds since start",
            "per second",
        ),
        "cpu": line_svg(
            "CPU per process (% of one core)",
            {n: [(t, c) for t, c, _ in s[1:]] for n, s in sampler.series.items()},
            "seconds since start",
            "% CPU",
        ),
    }
    if samples:
        budget_h = freshness.BUDGET_S / 3600
        charts["freshness"] = line_svg(
            f"Oldest idle-bank position age (bank time, x{scale:g})",
            {
                "oldest age, h": [(x.t, x.oldest_age_s * scale / 3600) for x in samples if x.oldest_age_s is not None],
                "budget (4 h)": [(samples[0].t, budget_h), (samples[-1].t, budget_h)],
            },
            "seconds since start",
            "hours (bank time)",
        )
    if restart is not None:
        charts["reconnect"] = line_svg(
            "Devices connected after the broker restart",
            {"connected": [(t, c) for t, c in restart["curve"]]},
            "seconds since SIGTERM",
            "devices",
        )
    page = write_report(bench.args.out, summary, bench.details, charts)
    say(f"report: {page} and {bench.args.out / 'summary.json'}")
    return summary
