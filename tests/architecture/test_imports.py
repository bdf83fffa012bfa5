"""Who may import whom, read from the source (nothing is imported or started): the device emulator and its
benchmark speak to the platform like a real cabinet or an operator's tool, through the contracts (MQTT,
events) and the public HTTP API, so they import the shared libraries only (contracts, kit), never a
service's package, and their package does not depend on one (issue 17). No service imports another
service's package either: services meet through contracts, Kafka and HTTP."""

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = {"contracts", "kit"}


def _packages(folder: Path) -> dict[str, Path]:
    """Top-level package name -> its directory, for every project folder under `folder` (has pyproject.toml)."""
    found = {}
    for project in sorted(p.parent for p in folder.glob("*/pyproject.toml")):
        for package in project.iterdir():
            if (package / "__init__.py").exists():
                found[package.name] = package
    return found


SERVICE_PACKAGES = _packages(ROOT / "services") | _packages(ROOT) | {"console": ROOT / "console" / "console"}
SERVICE_PACKAGES = {name: path for name, path in SERVICE_PACKAGES.items() if name.endswith("_svc") or name == "console"}
FIRST_PARTY = set(SERVICE_PACKAGES) | SHARED | {"device_emulator"}


def _imported_top_levels(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def _first_party_imports(package_dir: Path) -> list[tuple[str, int, str]]:
    return [
        (str(path.relative_to(ROOT)), line, name)
        for path in sorted(package_dir.rglob("*.py"))
        for line, name in _imported_top_levels(path)
        if name in FIRST_PARTY
    ]


def test_the_rule_sees_every_service() -> None:
    assert {"user_svc", "device_svc", "billing_svc", "asset_credit_svc", "notify_svc", "analytics_svc"} <= set(
        SERVICE_PACKAGES
    )


def test_the_emulator_imports_only_the_shared_libraries() -> None:
    emulator = ROOT / "device-emulator"
    found = [
        (where, line, name)
        for where, line, name in _first_party_imports(emulator / "device_emulator")
        + _first_party_imports(emulator / "tests")
        if name not in SHARED | {"device_emulator"}
    ]
    assert found == [], f"the emulator imports a service's code: {found}"


def test_the_emulator_package_depends_on_no_service() -> None:
    project = tomllib.loads((ROOT / "device-emulator" / "pyproject.toml").read_text())["project"]
    own = {dep.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip() for dep in project["dependencies"]}
    first_party = {d for d in own if d.startswith("pb-")}
    assert first_party <= {"pb-contracts", "pb-kit"}, first_party


@pytest.mark.parametrize("package", sorted(SERVICE_PACKAGES))
def test_no_service_imports_another(package: str) -> None:
    found = [
        (where, line, name)
        for where, line, name in _first_party_imports(SERVICE_PACKAGES[package])
        if name not in SHARED | {package}
    ]
    assert found == [], f"{package} imports another component's code: {found}"
