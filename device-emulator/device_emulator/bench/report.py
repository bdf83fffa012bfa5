"""Percentiles, SVG charts (written by hand: no plotting dependency) and the report files:
reports/bench/summary.json and reports/bench/index.md with the charts beside it."""

from __future__ import annotations

import html
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 260, 60, 20, 30, 40
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


def say(text: str) -> None:
    """A progress line for the operator (stderr)."""
    print(f"bench: {text}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 2)

    return {
        "n": len(values),
        "p50": r(percentile(values, 50)),
        "p90": r(percentile(values, 90)),
        "p99": r(percentile(values, 99)),
        "max": r(max(values)) if values else None,
        "mean": r(sum(values) / len(values)) if values else None,
    }


def ratio(value: float | None, floor: float | None) -> float | None:
    if value is None or floor is None or floor <= 0:
        return None
    return round(value / floor, 1)


def _svg(title: str, body: list[str], x_label: str, y_label: str) -> str:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        'font-family="sans-serif" font-size="11">'
        f'<rect width="{W}" height="{H}" fill="white"/>'
        f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>'
        f'<text x="{W / 2}" y="{H - 6}" text-anchor="middle">{html.escape(x_label)}</text>'
        f'<text x="12" y="{H / 2}" text-anchor="middle" transform="rotate(-90 12 {H / 2})">'
        f"{html.escape(y_label)}</text>"
        f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="black"/>'
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="black"/>'
    )
    return head + "".join(body) + "</svg>\n"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(step))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= step), default=step)
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(n + 2) if start + i * step <= hi + 1e-9]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.2g}"


def histogram_svg(title: str, series: Mapping[str, Sequence[float]], unit: str = "ms", bins: int = 40) -> str:
    """Latency distribution: one step line per series over log-spaced buckets."""
    values = [v for vs in series.values() for v in vs if v > 0]
    if not values:
        return _svg(title + " (no data)", [], unit, "share of samples")
    lo, hi = math.log10(min(values)), math.log10(max(values) * 1.0001)
    if hi - lo < 0.5:
        lo, hi = lo - 0.25, hi + 0.25
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    hists: dict[str, list[float]] = {}
    for name, vs in series.items():
        counts = [0] * bins
        for v in vs:
            if v > 0:
                counts[min(bins - 1, max(0, int((math.log10(v) - lo) / (hi - lo) * bins)))] += 1
        total = max(1, len(vs))
        hists[name] = [c / total for c in counts]
    top = max((max(h) for h in hists.values()), default=1.0) or 1.0
    body: list[str] = []
    for e in range(math.floor(lo), math.ceil(hi) + 1):
        for m in (1, 2, 5):
            lv = e + math.log10(m)
            if lo <= lv <= hi:
                x = PAD_L + (lv - lo) / (hi - lo) * pw
                body.append(f'<line x1="{x:.1f}" y1="{H - PAD_B}" x2="{x:.1f}" y2="{H - PAD_B + 4}" stroke="black"/>')
                body.append(f'<text x="{x:.1f}" y="{H - PAD_B + 15}" text-anchor="middle">{_fmt(10**lv)}</text>')
    for i, (name, h) in enumerate(hists.items()):
        color = COLORS[i % len(COLORS)]
        points = []
        for b, share in enumerate(h):
            x0 = PAD_L + (edges[b] - lo) / (hi - lo) * pw
            x1 = PAD_L + (edges[b + 1] - lo) / (hi - lo) * pw
            y = H - PAD_B - share / top * ph
            points += [f"{x0:.1f},{y:.1f}", f"{x1:.1f},{y:.1f}"]
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(points)}"/>')
        p50, p99 = percentile(series[name], 50), percentile(series[name], 99)
        label = f"{name} (n={len(series[name])}, p50 {_fmt(p50 or 0)}, p99 {_fmt(p99 or 0)} {unit})"
        body.append(f'<text x="{W - PAD_R - 5}" y="{PAD_T + 12 + 14 * i}" text-anchor="end" fill="{color}">')
        body.append(f"{html.escape(label)}</text>")
    return _svg(title, body, f"{unit} (log scale)", "share of samples")


def line_svg(title: str, series: Mapping[str, Sequence[tuple[float, float]]], x_label: str, y_label: str) -> str:
    """Values over time: one polyline per series of (t, value) points."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return _svg(title + " (no data)", [], x_label, y_label)
    x_lo, x_hi = min(p[0] for p in pts), max(p[0] for p in pts)
    y_hi = max(p[1] for p in pts) * 1.1 or 1.0
    x_hi = x_hi if x_hi > x_lo else x_lo + 1
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    body: list[str] = []
    for t in _ticks(0, y_hi):
        y = H - PAD_B - t / y_hi * ph
        body.append(f'<line x1="{PAD_L - 4}" y1="{y:.1f}" x2="{W - PAD_R}" y2="{y:.1f}" stroke="#ddd"/>')
        body.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for t in _ticks(x_lo, x_hi):
        if t < x_lo:
            continue
        x = PAD_L + (t - x_lo) / (x_hi - x_lo) * pw
        body.append(f'<text x="{x:.1f}" y="{H - PAD_B + 15}" text-anchor="middle">{_fmt(t)}</text>')
    for i, (name, s) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        points = " ".join(
            f"{PAD_L + (x - x_lo) / (x_hi - x_lo) * pw:.1f},{H - PAD_B - y / y_hi * ph:.1f}" for x, y in s
        )
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>')
        body.append(f'<text x="{W - PAD_R - 5}" y="{PAD_T + 12 + 14 * i}" text-anchor="end" fill="{color}">')
        body.append(f"{html.escape(name)}</text>")
    return _svg(title, body, x_label, y_label)


def _real(bank_time_s: Any, time_scale: Any) -> float | None:
    if not isinstance(bank_time_s, int | float) or not isinstance(time_scale, int | float) or time_scale <= 0:
        return None
    return round(bank_time_s / time_scale, 3)


def write_report(out_dir: Path, summary: dict[str, Any], details: dict[str, Any], charts: dict[str, str]) -> Path:
    """summary.json (headline figures), details.json (everything), one SVG per chart, index.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (out_dir / "details.json").write_text(json.dumps(details, indent=2, sort_keys=True, default=str) + "\n")
    for name, svg in charts.items():
        (out_dir / f"{name}.svg").write_text(svg)
    lines = [
        "# Swarm benchmark",
        "",
        f"Parameters: `{json.dumps(details.get('params', {}), sort_keys=True)}`",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v} |" for k, v in sorted(summary.items())]
    floors = details.get("floors", {})
    if floors:
        lines += ["", "## Floors (same run)", "", "```", json.dumps(floors, indent=2, sort_keys=True), "```"]
    fresh = details.get("freshness")
    if fresh:
        sched = fresh.get("schedule", {})
        k = summary.get("freshness_time_scale")
        lines += [
            "",
            "## Location freshness (7.2: an idle bank's position at least every 4 h)",
            "",
            f"{summary.get('freshness_banks')} idle bank modules, each its own MQTT connection, report a position "
            f"every {sched.get('every_s')} s +- {sched.get('jitter')} (bank time), time compressed x{k}; device-svc's "
            "stored position times were read from `GET /v1/ops/banks` during the load.",
            "",
            "| figure | bank time | real |",
            "| --- | --- | --- |",
            f"| oldest latest-position age among idle banks | {summary.get('freshness_oldest_position_s')} s | "
            f"{summary.get('freshness_oldest_position_real_s')} s |",
            f"| budget | {summary.get('freshness_budget_s')} s | {_real(summary.get('freshness_budget_s'), k)} s |",
            f"| longest gap between one bank's reports (emulator side) | "
            f"{summary.get('freshness_max_report_gap_s')} s | |",
            "",
            f"Banks over the budget at some reading: {summary.get('freshness_stale_banks')}; readings: "
            f"{summary.get('freshness_samples')}; reports sent: {fresh.get('reports_sent')}.",
        ]
        if "freshness" in charts:
            lines += ["", "![freshness](freshness.svg)"]
    lines += _cpu_section(summary, details.get("cpu"))
    lines += _storm_section(details.get("broker_restart"))
    procs = details.get("processes", {})
    if procs:
        lines += [
            "",
            "## Processes",
            "",
            "| process | CPU avg % | CPU max % | RSS max MiB |",
            "| --- | --- | --- | --- |",
        ]
        for name, p in sorted(procs.items()):
            lines.append(f"| {name} | {p['cpu_avg_pct']} | {p['cpu_max_pct']} | {p['rss_max_mib']} |")
    lines += ["", "## Charts", ""]
    lines += [f"![{name}]({name}.svg)" for name in charts]
    notes = details.get("notes", [])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    page = out_dir / "index.md"
    page.write_text("\n".join(lines) + "\n")
    return page


def _cpu_section(summary: dict[str, Any], cost: dict[str, Any] | None) -> list[str]:
    if not cost:
        return []
    counted = ", ".join(
        f"{name} ({len(pids)} root pid{'s' if len(pids) != 1 else ''})" for name, pids in cost["counted"].items()
    )
    lines = [
        "",
        "## CPU cost (issue 9)",
        "",
        f"Counted as the platform: {counted}. Read from /proc as process trees (utime + stime of every live "
        "process, plus cutime + cstime, so backends that ended between two readings still count). Not counted: "
        "this benchmark's process (swarm, users, probes) and the stack's device emulator.",
        "",
        "- `idle_cpu_pct_of_core`: the platform's CPU in the idle window (swarm connected and silent, once the "
        "telemetry sent before had arrived and `--settle-s` more had passed, so every consumer is back at its rest "
        "fetch wait), per second of that window.",
        "- `cpu_ms_per_report`: (CPU in the telemetry-only window - idle rate x its seconds) / heartbeats seen on "
        "Kafka in it; without unlocks the whole load window is telemetry only.",
        "- `cpu_ms_per_rental`: (CPU from the load's start until every rental in flight finished - idle rate x "
        "those seconds - heartbeats seen on Kafka meanwhile x `cpu_ms_per_report` - the benchmark's own API polls "
        "x `cpu_ms_per_bench_poll`) / rentals completed (unlocked, returned, billing stopped, debit and inbox "
        "message seen). With `--telemetry-rate 0` nothing but idle and polls is taken out. Failed unlocks cost "
        "CPU too and have no rental of their own: their cost lands on the completed ones (see `unlock_errors`; "
        "after an error whose eject the cabinet received, the bench hands the bank back so the user can go on, "
        "`unlock_errors_bank_handed_back`: that rental's close is in the window too).",
        "- `cpu_ms_per_bench_poll`: the benchmark times a billing stop by polling the rental, then the wallet "
        "entries and the inbox (5 items each); after the load it issues the same requests in the same mix on "
        "their own and divides the CPU above idle by their number. Accounted for, not left in the rental.",
        "",
        "| window | seconds | CPU s | % of a core | reports | rentals | polls |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for w in cost["windows"]:
        lines.append(
            f"| {w['window']} | {w['seconds']} | {w['cpu_s']} | {w['pct_of_core']} | {w['reports']} | "
            f"{w['rentals']} | {w['polls']} |"
        )
    lines += ["", "| figure | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in cost["figures"].items()]
    groups = cost.get("per_group_pct_of_core", {})
    if groups:
        names = sorted({n for g in groups.values() for n in g})
        lines += ["", "% of a core per group:", "", "| group | " + " | ".join(groups) + " |"]
        lines.append("| --- |" + " --- |" * len(groups))
        lines += [f"| {n} | " + " | ".join(str(g.get(n, "")) for g in groups.values()) + " |" for n in names]
    lines += [f"- {note}" for note in cost.get("notes", [])]
    return lines


def _storm_section(storm: dict[str, Any] | None) -> list[str]:
    if not storm or "devices" not in storm:
        return []
    return [
        "",
        "## Connect storm (broker restart)",
        "",
        f"{storm['devices']} devices; Mosquitto stopped (SIGTERM) and started again; seconds from the SIGTERM:",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| devices dropped until `stack.py up` returned (Mosquitto is up earlier) | "
        f"{storm.get('restart_command_s')} s |",
        f"| every device connected again | {storm.get('all_back_s_after_sigterm')} s |",
        f"| device-svc shows every swarm cabinet online and heard from since the SIGTERM | "
        f"{storm.get('online_s_after_sigterm')} s |",
        f"| first borrow answered with an active rental | {storm.get('rent_again_s_after_sigterm')} s |",
        f"| borrows tried during the storm / answered after more than 5 s | {storm.get('unlocks')} / "
        f"{storm.get('unlocks_over_5s')} |",
        f"| their errors by code | {storm.get('unlock_errors_by_code')} |",
        f"| answered with an error although the cabinet ejected | {storm.get('unlock_error_but_ejected')} |",
    ]
