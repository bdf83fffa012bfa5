"""The map without a tile server: the cabinets' own positions projected onto an SVG, a coordinate grid,
and hotspot cells (H3 outlines) from analytics-svc. Nothing is fetched from outside the platform."""

import math
from dataclasses import dataclass
from typing import Any

import h3

WIDTH, HEIGHT, PAD = 800, 560, 40
MIN_SPAN_DEG = 0.01
GRID_STEPS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class Projection:
    lat0: float
    lon0: float
    scale: float  # pixels per degree of latitude
    kx: float  # cos(latitude): a degree of longitude is shorter

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        return (
            round(PAD + (lon - self.lon0) * self.kx * self.scale, 1),
            round(HEIGHT - PAD - (lat - self.lat0) * self.scale, 1),
        )


def projection(points: list[tuple[float, float]]) -> Projection:
    if not points:
        points = [(22.54, 114.06)]
    lats, lons = [p[0] for p in points], [p[1] for p in points]
    mid = (min(lats) + max(lats)) / 2
    kx = math.cos(math.radians(mid))
    span_lat = max(max(lats) - min(lats), MIN_SPAN_DEG)
    span_lon = max((max(lons) - min(lons)) * kx, MIN_SPAN_DEG)
    scale = min((WIDTH - 2 * PAD) / span_lon, (HEIGHT - 2 * PAD) / span_lat)
    # centre the points in the drawing
    lat0 = (min(lats) + max(lats)) / 2 - (HEIGHT - 2 * PAD) / scale / 2
    lon0 = (min(lons) + max(lons)) / 2 - (WIDTH - 2 * PAD) / scale / kx / 2
    return Projection(lat0=lat0, lon0=lon0, scale=scale, kx=kx)


@dataclass(frozen=True)
class GridLine:
    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    lx: float
    ly: float


def grid(p: Projection) -> list[GridLine]:
    lat_span = (HEIGHT - 2 * PAD) / p.scale
    step = next((s for s in GRID_STEPS if lat_span / s <= 8), GRID_STEPS[-1])
    decimals = max(0, -math.floor(math.log10(step)))
    lines: list[GridLine] = []
    # The grid reaches well past the first view, so panning and zooming out still show it.
    lat_min, lat_max = p.lat0 - 2 * lat_span, p.lat0 + 3 * lat_span
    lat = math.ceil(lat_min / step) * step
    while lat <= lat_max:
        _, y = p.xy(lat, p.lon0)
        lines.append(GridLine(-2 * WIDTH, y, 3 * WIDTH, y, f"{lat:.{decimals}f}°N", 2, y - 2))
        lat += step
    lon_span = (WIDTH - 2 * PAD) / p.scale / p.kx
    lon_min, lon_max = p.lon0 - 2 * lon_span, p.lon0 + 3 * lon_span
    lon = math.ceil(lon_min / step) * step
    while lon <= lon_max:
        x, _ = p.xy(p.lat0, lon)
        lines.append(GridLine(x, -2 * HEIGHT, x, 3 * HEIGHT, f"{lon:.{decimals}f}°E", x + 2, HEIGHT - 4))
        lon += step
    return lines


def cabinet_state(cabinet: dict[str, Any], alarmed: set[str]) -> str:
    """online, offline, alarm, full or empty: the map's colours and the list's filter."""
    if not cabinet["online"]:
        return "offline"
    if cabinet["id"] in alarmed:
        return "alarm"
    if cabinet["banks_available"] == 0:
        return "empty"
    if cabinet["free_slots"] == 0:
        return "full"
    return "online"


def cell_outline(cell: str, p: Projection) -> str:
    """An H3 cell as SVG polygon points."""
    return " ".join(f"{x},{y}" for x, y in (p.xy(lat, lon) for lat, lon in h3.cell_to_boundary(cell)))
