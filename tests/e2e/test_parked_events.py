"""The operator's command for parked events reaches every running service (issue 14)."""

import subprocess
import sys

import pytest
from mesh import ROOT, STACK, STACK_TOOL, Mesh

pytestmark = pytest.mark.e2e


def test_parked_command_lists_every_service(mesh: Mesh) -> None:
    result = subprocess.run(
        [sys.executable, STACK_TOOL, "parked", "list", "--stack", STACK],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for service in ("user", "device", "billing", "asset", "notify", "analytics"):
        assert f"{service}: 0 parked" in lines, result.stdout  # a healthy mesh parks nothing
