"""The region model every service agrees on: administrative divisions and H3 hexagonal cells.

Divisions follow GB/T 2260: six-digit codes where the first two digits name the province, the
first four the city (prefecture) and all six the district (county). So `440304` (Futian) lies in
`440300` (Shenzhen), which lies in `440000` (Guangdong), and a filter "in 440300" is a prefix
match on `4403`.

A cabinet's division comes from its position (`division_at`) unless staff set one by hand
(device-svc: a cabinet's `region` holding a six-digit code). The bundled table is deliberately
small: the cities the seed, the emulator and the tests use, each district as a bounding box plus
its centroid. A point inside several boxes goes to the nearest centroid among them; a point inside
a city's box but in none of its districts gets the city; anywhere else gets no division (the
facts still carry the H3 cell). A national operator replaces `DIVISIONS` with the full GB/T 2260
table and polygon boundaries; the codes and the functions stay the same.

Cells are H3 (Uber's hexagonal grid) at resolution `CELL_RESOLUTION` (8: hexagons of about
0.74 km², a few street blocks); coarser heat maps take `cell_parent`.
"""

import math
import re
from enum import StrEnum
from typing import Annotated

import h3
from pydantic import BaseModel, ConfigDict, Field

CELL_RESOLUTION = 8
DIVISION_CODE_PATTERN = r"^[1-8]\d{5}$"
_CODE = re.compile(DIVISION_CODE_PATTERN)

DivisionCode = Annotated[str, Field(pattern=DIVISION_CODE_PATTERN, description="GB/T 2260 six-digit division code")]


class DivisionLevel(StrEnum):
    PROVINCE = "province"
    CITY = "city"
    DISTRICT = "district"


class Division(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: DivisionCode
    name: str
    level: DivisionLevel
    # (south, west, north, east) in WGS-84 degrees, and the centroid (lat, lon); provinces have none here.
    bbox: tuple[float, float, float, float] | None = None
    centroid: tuple[float, float] | None = None

    @property
    def parent_code(self) -> str | None:
        return parent_code(self.code)


class RegionRef(BaseModel):
    """Where a fact happened: its division (most specific known) and its H3 cell. Carried by
    rental and return facts (`device.bank.ejected`, `device.bank.returned`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    division_code: DivisionCode | None = None
    cell: str | None = Field(default=None, max_length=16, description="H3 cell at resolution 8 (hex string)")


def _d(code: str, name: str, level: DivisionLevel, box: tuple[float, float, float, float] | None = None) -> Division:
    centroid = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) if box else None
    return Division(code=code, name=name, level=level, bbox=box, centroid=centroid)


P, C, D = DivisionLevel.PROVINCE, DivisionLevel.CITY, DivisionLevel.DISTRICT

# Approximate boxes (a few hundred metres of slack at the edges); enough to tell districts apart
# where the seed and the emulator put cabinets, not a survey.
DIVISIONS: dict[str, Division] = {
    d.code: d
    for d in [
        _d("440000", "Guangdong", P),
        _d("440300", "Shenzhen", C, (22.44, 113.75, 22.87, 114.63)),
        _d("440303", "Luohu", D, (22.53, 114.09, 22.66, 114.22)),
        _d("440304", "Futian", D, (22.50, 113.98, 22.59, 114.10)),
        _d("440305", "Nanshan", D, (22.46, 113.86, 22.61, 113.99)),
        _d("440306", "Bao'an", D, (22.54, 113.75, 22.87, 113.95)),
        _d("440307", "Longgang", D, (22.58, 114.05, 22.80, 114.38)),
        _d("440308", "Yantian", D, (22.54, 114.20, 22.65, 114.35)),
        _d("440309", "Longhua", D, (22.60, 113.96, 22.78, 114.10)),
        _d("440100", "Guangzhou", C, (22.52, 112.95, 23.93, 114.05)),
        _d("440106", "Tianhe", D, (23.10, 113.30, 23.24, 113.44)),
        _d("440104", "Yuexiu", D, (23.10, 113.23, 23.17, 113.32)),
        _d("110000", "Beijing", P),
        _d("110100", "Beijing", C, (39.44, 115.42, 41.06, 117.51)),
        _d("110101", "Dongcheng", D, (39.85, 116.38, 39.97, 116.45)),
        _d("110102", "Xicheng", D, (39.86, 116.30, 39.97, 116.39)),
        _d("110105", "Chaoyang", D, (39.81, 116.40, 40.10, 116.64)),
        _d("110108", "Haidian", D, (39.88, 116.05, 40.16, 116.39)),
        _d("310000", "Shanghai", P),
        _d("310100", "Shanghai", C, (30.68, 120.85, 31.87, 122.00)),
        _d("310101", "Huangpu", D, (31.19, 121.46, 31.25, 121.51)),
        _d("310104", "Xuhui", D, (31.12, 121.40, 31.22, 121.47)),
        _d("310115", "Pudong", D, (30.85, 121.48, 31.40, 121.98)),
    ]
}


def is_division_code(value: str) -> bool:
    return bool(_CODE.match(value))


def parent_code(code: str) -> str | None:
    if code.endswith("0000"):
        return None
    if code.endswith("00"):
        return code[:2] + "0000"
    return code[:4] + "00"


def level_of(code: str) -> DivisionLevel:
    if code.endswith("0000"):
        return DivisionLevel.PROVINCE
    if code.endswith("00"):
        return DivisionLevel.CITY
    return DivisionLevel.DISTRICT


def code_prefix(code: str) -> str:
    """What every code inside `code` starts with: `44` for a province, `4403` for a city, the code
    itself for a district. Filters by division are prefix matches on it."""
    level = level_of(code)
    return code[:2] if level is DivisionLevel.PROVINCE else code[:4] if level is DivisionLevel.CITY else code


def targets(regions: list[str], division_code: str | None) -> bool:
    """Whether something aimed at `regions` (division codes; none: everywhere) reaches a place in
    `division_code`: that division or one inside it. A city's target reaches its districts; a district's
    target does not reach a place known only by its city. Ads use it in notify-svc and device-svc."""
    if not regions:
        return True
    return division_code is not None and any(division_code.startswith(code_prefix(r)) for r in regions)


def at_level(code: str, level: DivisionLevel) -> str | None:
    """The division containing `code` at `level` (None when `code` is coarser than that)."""
    own = level_of(code)
    order = [DivisionLevel.PROVINCE, DivisionLevel.CITY, DivisionLevel.DISTRICT]
    if order.index(own) < order.index(level):
        return None
    return {DivisionLevel.PROVINCE: code[:2] + "0000", DivisionLevel.CITY: code[:4] + "00"}.get(level, code)


def name_of(code: str) -> str:
    division = DIVISIONS.get(code)
    return division.name if division else code


def _inside(box: tuple[float, float, float, float], lat: float, lon: float) -> bool:
    south, west, north, east = box
    return south <= lat <= north and west <= lon <= east


def _distance(a: tuple[float, float], lat: float, lon: float) -> float:
    return math.hypot(a[0] - lat, (a[1] - lon) * math.cos(math.radians(lat)))


def division_at(lat: float, lon: float) -> Division | None:
    """The most specific bundled division containing the point, or None outside the table."""
    for level in (DivisionLevel.DISTRICT, DivisionLevel.CITY):
        hits = [d for d in DIVISIONS.values() if d.level is level and d.bbox and _inside(d.bbox, lat, lon)]
        if hits:
            return min(hits, key=lambda d: _distance(d.centroid or (lat, lon), lat, lon))
    return None


def cell_at(lat: float, lon: float, resolution: int = CELL_RESOLUTION) -> str:
    return str(h3.latlng_to_cell(lat, lon, resolution))


def cell_parent(cell: str, resolution: int) -> str:
    if resolution >= h3.get_resolution(cell):
        return cell
    return str(h3.cell_to_parent(cell, resolution))


def cell_center(cell: str) -> tuple[float, float]:
    lat, lon = h3.cell_to_latlng(cell)
    return float(lat), float(lon)


def region_at(lat: float | None, lon: float | None, override: str | None = None) -> RegionRef:
    """A cabinet's region: staff's division when `override` is a division code, else its position's."""
    if lat is None or lon is None:
        return RegionRef(division_code=override if override and is_division_code(override) else None)
    division = override if override and is_division_code(override) else None
    if division is None:
        found = division_at(lat, lon)
        division = found.code if found else None
    return RegionRef(division_code=division, cell=cell_at(lat, lon))
