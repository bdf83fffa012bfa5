"""CPU the platform spends, read from /proc, and how the benchmark divides it into a cost per rental, per
telemetry report and at rest.

What counts as the platform: the stack's six services and tansu (their pid files under $PB_STATE_DIR/pids),
its Mosquitto (its own pid file) and its PostgreSQL cluster (the postmaster listening on the port of the
stack's database URLs, with every backend and background process under it). Left out: this benchmark's
process (the swarm, the simulated users, the probes) and the stack's device emulator. Each group is counted
as a process tree: utime + stime of every live process plus cutime + cstime (the time of children that
ended and were reaped, e.g. PostgreSQL backends that closed between two readings), so nothing is lost when a
process comes and goes. When the stack shares a system PostgreSQL with others, only the backends serving
the stack's own databases are counted (the shared background processes are not).

Attribution (see `attribute`): the idle window gives the rate at rest; a telemetry-only window gives CPU per
report above that rate; in the mixed window CPU per completed rental = (mixed CPU - idle rate x seconds -
reports x CPU per report - the benchmark's own API polls x CPU per poll) / completed rentals. CPU per poll is
measured after the load by issuing the same requests on their own.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_TICK = os.sysconf("SC_CLK_TCK")
_LISTEN = "0A"


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    ppid: int
    own_s: float  # utime + stime
    children_s: float  # cutime + cstime (reaped children)


def read_stat(pid: int) -> ProcStat | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    # after "pid (comm) ": state ppid ... utime(11) stime(12) cutime(13) cstime(14)
    return ProcStat(
        pid,
        int(fields[1]),
        (int(fields[11]) + int(fields[12])) / _TICK,
        (int(fields[13]) + int(fields[14])) / _TICK,
    )


def all_stats() -> dict[int, ProcStat]:
    out: dict[int, ProcStat] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                out[stat.pid] = stat
    return out


def tree_pids(roots: Iterable[int], stats: Mapping[int, ProcStat]) -> list[int]:
    """`roots` and every live descendant of them."""
    children: dict[int, list[int]] = {}
    for s in stats.values():
        children.setdefault(s.ppid, []).append(s.pid)
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid in stats:
            found.append(pid)
            todo += children.get(pid, [])
    return found


def tree_cpu_s(root: int, stats: Mapping[int, ProcStat]) -> float:
    """CPU seconds of `root` and every live descendant, including the reaped children of each."""
    return sum(stats[pid].own_s + stats[pid].children_s for pid in tree_pids([root], stats))


def listening_pid(port: int) -> int | None:
    """The process holding a TCP listening socket on `port` (IPv4 or IPv6), found through /proc."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == _LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() not in ("postgres", "postmaster"):
                continue
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(entry.name)
    return None


def stack_databases(env: Mapping[str, str]) -> tuple[int | None, set[str]]:
    """(port, database names) of the stack's PostgreSQL, from its *_DATABASE_URL variables."""
    port: int | None = None
    names: set[str] = set()
    for key, value in env.items():
        if key.endswith("DATABASE_URL") and value:
            parts = urlsplit(value)
            port = parts.port or 5432
            names.add(parts.path.lstrip("/"))
    return port, names


def _backends_of(postmaster: int, databases: Collection[str]) -> list[int]:
    """The postmaster's children that serve one of `databases` ("postgres: user db host(port) state")."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                stat = read_stat(int(entry.name))
                if stat is None or stat.ppid != postmaster:
                    continue
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if backend_database(title) in databases:
                    found.append(stat.pid)
    return found


# "postgres: [cluster_name: ]user database host(port)|[local] state"; Debian sets cluster_name ("15/main").
_BACKEND_TITLE = re.compile(r"postgres: (?:\S+: )?\S+ (\S+) (?:\[local\]|\S+\(\d+\))")


def backend_database(title: str) -> str | None:
    """The database a backend serves, from its process title; None for background processes."""
    match = _BACKEND_TITLE.match(title)
    return match.group(1) if match else None


@dataclass(frozen=True, slots=True)
class Platform:
    """Root pids per group; `whole_trees` lists groups counted with every descendant."""

    roots: dict[str, list[int]]
    whole_trees: frozenset[str]
    notes: tuple[str, ...] = ()
    # A shared PostgreSQL (postmaster pid, the stack's databases): its backends are found again at each
    # reading, since the services' pools open connections while the load runs.
    shared_pg: tuple[int, frozenset[str]] | None = None

    def roots_now(self) -> dict[str, list[int]]:
        if self.shared_pg is None:
            return self.roots
        return {**self.roots, "postgres": _backends_of(*self.shared_pg)}


def platform_processes(state_dir: Path | None, env: Mapping[str, str]) -> Platform:
    roots: dict[str, list[int]] = {}
    notes: list[str] = []
    if state_dir is not None:
        for pid_file in sorted((state_dir / "pids").glob("*.pid")):
            if pid_file.stem == "emulator":  # the stack's own device emulator is not the platform
                continue
            with contextlib.suppress(OSError, ValueError):
                roots[pid_file.stem] = [int(pid_file.read_text().strip())]
        with contextlib.suppress(OSError, ValueError):
            roots["mosquitto"] = [int((state_dir / "mosquitto" / "mosquitto.pid").read_text().strip())]
    whole = set(roots)
    port, databases = stack_databases(env)
    postmaster = listening_pid(port) if port is not None else None
    if postmaster is None:
        notes.append("the stack's PostgreSQL was not found; its CPU is not counted")
    elif state_dir is not None and _private_cluster(postmaster, state_dir):
        roots["postgres"] = [postmaster]
        whole.add("postgres")
    else:
        shared = (postmaster, frozenset(databases))
        roots["postgres"] = _backends_of(*shared)
        notes.append("shared PostgreSQL: only the backends of the stack's databases are counted")
        return Platform(roots, frozenset(whole), tuple(notes), shared)
    return Platform(roots, frozenset(whole), tuple(notes))


def _private_cluster(postmaster: int, state_dir: Path) -> bool:
    """True when the postmaster's data directory is the stack's private cluster (.state/pg, or where it
    points), so the whole cluster works for this stack."""
    pointer = state_dir.parent / "pg" / "datadir"
    try:
        datadir = Path(pointer.read_text().strip())
        return Path(f"/proc/{postmaster}/cwd").resolve() == datadir.resolve()
    except OSError:
        return False


def platform_cpu_s(platform: Platform, stats: Mapping[int, ProcStat] | None = None) -> dict[str, float]:
    """Cumulative CPU seconds per group now (differences between two readings are what counts)."""
    stats = all_stats() if stats is None else stats
    out: dict[str, float] = {}
    for name, pids in platform.roots_now().items():
        if name in platform.whole_trees:
            out[name] = sum(tree_cpu_s(pid, stats) for pid in pids)
        else:
            out[name] = sum(stats[p].own_s for p in pids if p in stats)
    return out


@dataclass(frozen=True, slots=True)
class Window:
    """Platform CPU seconds spent over `seconds` of wall time, and what happened in it."""

    cpu_s: float
    seconds: float
    reports: int = 0
    rentals: int = 0
    polls: int = 0


def window(before: Mapping[str, float], after: Mapping[str, float], seconds: float, **counts: int) -> Window:
    return Window(sum(after.values()) - sum(before.get(k, 0.0) for k in after), seconds, **counts)


def per_group_pct(before: Mapping[str, float], after: Mapping[str, float], seconds: float) -> dict[str, float]:
    return {k: round((after[k] - before.get(k, 0.0)) / seconds * 100, 1) for k in after} if seconds > 0 else {}


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def attribute(
    idle: Window | None,
    telemetry: Window | None,
    mixed: Window | None,
    polls: Window | None = None,
) -> dict[str, Any]:
    """The cost figures from the measured windows (None where a window is missing or has nothing to divide).

    idle_cpu_pct_of_core: idle CPU / idle seconds. Above idle, CPU per poll from the poll window, CPU per report
    from the telemetry-only window (or, with no unlocks, from the mixed window, which is then telemetry only),
    and CPU per rental from what is left of the mixed window after idle, reports and polls."""
    idle_rate = idle.cpu_s / idle.seconds if idle is not None and idle.seconds > 0 else None

    def above_idle(w: Window) -> float | None:
        return None if idle_rate is None else w.cpu_s - idle_rate * w.seconds

    per_poll = None
    if polls is not None and polls.polls > 0 and (extra := above_idle(polls)) is not None:
        per_poll = max(0.0, extra) / polls.polls
    reports_window = telemetry
    if reports_window is None and mixed is not None and not mixed.rentals:
        reports_window = mixed  # no unlocks: the load window is telemetry only
    per_report = None
    if reports_window is not None and reports_window.reports > 0 and (extra := above_idle(reports_window)) is not None:
        per_report = extra / reports_window.reports
    per_rental = None
    if mixed is not None and mixed.rentals > 0 and (extra := above_idle(mixed)) is not None:
        if mixed.reports and per_report is None:
            extra = None  # reports in the window but no measured cost per report: cannot separate them
        else:
            extra -= mixed.reports * (per_report or 0.0) + mixed.polls * (per_poll or 0.0)
            per_rental = extra / mixed.rentals
    return {
        "idle_cpu_pct_of_core": _r(idle_rate * 100 if idle_rate is not None else None, 1),
        "cpu_ms_per_report": _r(per_report * 1000 if per_report is not None else None),
        "cpu_ms_per_rental": _r(per_rental * 1000 if per_rental is not None else None, 1),
        "cpu_ms_per_bench_poll": _r(per_poll * 1000 if per_poll is not None else None),
    }


def describe(windows: Iterable[tuple[str, Window | None]]) -> list[dict[str, Any]]:
    return [
        {
            "window": name,
            "seconds": round(w.seconds, 2),
            "cpu_s": round(w.cpu_s, 3),
            "pct_of_core": round(w.cpu_s / w.seconds * 100, 1) if w.seconds > 0 else None,
            "reports": w.reports,
            "rentals": w.rentals,
            "polls": w.polls,
        }
        for name, w in windows
        if w is not None
    ]
