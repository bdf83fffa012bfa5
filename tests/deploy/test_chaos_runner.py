"""`make chaos` (tests/chaos/run.py) stays runnable and its report keeps the fields issue 14 names; the run itself
needs its own stack and minutes, so it is not part of `make test` (README, "make chaos")."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "chaos" / "run.py"


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos_run", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_runner_starts_and_the_makefile_runs_it_on_its_own_stack() -> None:
    done = subprocess.run([sys.executable, str(RUNNER), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--duration-s" in done.stdout and "--seed" in done.stdout
    makefile = (ROOT / "Makefile").read_text()
    assert "chaos: install" in makefile and "--stack chaos -- $(PY) tests/chaos/run.py" in makefile


def test_the_report_has_the_figures_the_issue_asks_for(tmp_path: Path) -> None:
    runner = _runner()
    figures = runner.Figures()
    figures.faults = [{"kind": "restart_broker", "recovery_s": 4.0}, {"kind": "restart_broker", "recovery_s": 6.0}]
    figures.flows_attempted.update({"rental": 3, "top_up": 1})
    figures.flows_completed.update({"rental": 3, "top_up": 1})
    figures.invariant_checks = 12
    chaos = runner.Chaos.__new__(runner.Chaos)
    chaos.fig = figures
    chaos.args = type("Args", (), {"seed": 1, "duration_s": 10.0, "users": 1})()
    summary = chaos.summary(runner.datetime.now(runner.UTC))
    runner.write_report(summary, tmp_path)
    written = json.loads((tmp_path / "summary.json").read_text())
    for key in (
        "faults_injected",
        "faults_by_kind",
        "flows_attempted",
        "flows_completed",
        "invariant_checks",
        "violations",
        "recovery_s_max",
    ):
        assert key in written
    assert written["faults_by_kind"] == {"restart_broker": 2} and written["recovery_s_max"] == 6.0
    assert written["recovery_by_kind"]["restart_broker"]["p50_s"] == 5.0
    page = (tmp_path / "index.md").read_text()
    assert "| restart_broker | 2 | 5.0 | 6.0 |" in page and "violations: **0**" in page
