"""The region model: division codes roll up by prefix, positions map to the bundled divisions,
and the region fields on events are additive (an old payload still parses)."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from contracts import event_adapter
from contracts.events import BankReturned
from contracts.regions import (
    DIVISIONS,
    DivisionLevel,
    RegionRef,
    at_level,
    cell_at,
    cell_parent,
    code_prefix,
    division_at,
    level_of,
    parent_code,
    region_at,
    targets,
)


def test_codes_roll_up_by_their_digits() -> None:
    assert parent_code("440304") == "440300"
    assert parent_code("440300") == "440000"
    assert parent_code("440000") is None
    assert [level_of(c) for c in ("440000", "440300", "440304")] == list(DivisionLevel)
    assert [code_prefix(c) for c in ("440000", "440300", "440304")] == ["44", "4403", "440304"]
    assert at_level("440304", DivisionLevel.CITY) == "440300"
    assert at_level("440304", DivisionLevel.PROVINCE) == "440000"
    assert at_level("440300", DivisionLevel.DISTRICT) is None


def test_every_bundled_division_sits_inside_its_parent() -> None:
    for code, division in DIVISIONS.items():
        assert division.level is level_of(code)
        parent = division.parent_code
        if parent is not None:
            assert parent in DIVISIONS, code
        if division.level is DivisionLevel.DISTRICT:
            assert division.centroid is not None
            found = division_at(*division.centroid)
            assert found is not None and found.code == code, (code, found)


@pytest.mark.parametrize(
    ("lat", "lon", "code"),
    [
        (22.54, 114.05, "440304"),  # the seed's origin: Futian
        (22.548, 114.13, "440303"),  # Luohu
        (22.55, 114.095, "440304"),  # in both Futian's and Luohu's boxes: the nearer centroid wins
        (22.53, 113.93, "440305"),  # Nanshan
        (22.47, 114.45, "440300"),  # Shenzhen, in no bundled district
        (39.91, 116.42, "110101"),  # Dongcheng
        (0.0, 0.0, None),
    ],
)
def test_positions_map_to_the_most_specific_division(lat: float, lon: float, code: str | None) -> None:
    found = division_at(lat, lon)
    assert (found.code if found else None) == code


def test_region_prefers_staff_override_and_always_has_a_cell() -> None:
    auto = region_at(22.54, 114.05)
    assert auto.division_code == "440304"
    assert auto.cell == cell_at(22.54, 114.05) and len(auto.cell) == 15
    assert region_at(22.54, 114.05, "440303").division_code == "440303"
    assert region_at(22.54, 114.05, "Futian").division_code == "440304"  # free text is not a code
    assert region_at(None, None).cell is None
    assert cell_parent(auto.cell, 6) != auto.cell and cell_parent(auto.cell, 9) == auto.cell


def test_division_codes_are_validated() -> None:
    with pytest.raises(ValidationError):
        RegionRef(division_code="44030")
    with pytest.raises(ValidationError):
        RegionRef(division_code="040304")


def test_region_on_return_facts_is_additive() -> None:
    now = datetime.now(UTC).isoformat()
    old = {
        "type": "device.bank.returned",
        "occurred_at": now,
        "producer": "old-device-svc",
        "key": "PB-1",
        "data": {
            "report_id": "r1",
            "bank_id": "PB-1",
            "cabinet_id": "CAB-1",
            "slot": 1,
            "battery_pct": 50,
            "returned_at": now,
            "device_reported_at": now,
            "received_at": now,
        },
    }
    parsed = event_adapter.validate_python(old)
    assert isinstance(parsed.data, BankReturned) and parsed.data.region is None
    new = {**old, "data": {**old["data"], "region": {"division_code": "440304", "cell": cell_at(22.54, 114.05)}}}
    parsed = event_adapter.validate_python(new)
    assert isinstance(parsed.data, BankReturned) and parsed.data.region is not None
    assert parsed.data.region.division_code == "440304"


def test_a_target_reaches_its_division_and_what_is_inside_it() -> None:
    assert targets([], None) and targets([], "110101")
    assert targets(["440304"], "440304") and not targets(["440304"], "440305")
    assert targets(["440300"], "440305") and targets(["440000"], "440305")
    assert not targets(["440304"], "440300")  # known only by the city: not inside the district
    assert not targets(["440304"], None)
    assert targets(["110101", "440300"], "440304")
