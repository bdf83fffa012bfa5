"""The supervision feed: facts mapped to MDS 2.0 shapes for power banks (cabinets are stops, banks
are vehicles, rentals are trips). Nothing personal leaves: no user id, phone or name; trip and
event ids are keyed HMACs of the rental id; positions are H3 cell centres (about 460 m)."""

import csv
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.models import RentalFact
from analytics_svc.supervision import mds
from analytics_svc.supervision import repository as repo
from contracts.regions import cell_center

VEHICLE_STATE = {"in_cabinet": "available", "rented": "on_trip", "faulty": "non_operational", "lost": "missing"}
K_ANONYMITY = 10  # MDS reports: counts below this are redacted (-1)
REPORT_COLUMNS = [
    "provider_id",
    "start_date",
    "duration",
    "special_group_type",
    "geography_id",
    "vehicle_type",
    "trip_count",
    "rider_count",
]


def _location(cell: str | None) -> dict[str, float] | None:
    if not cell:
        return None
    lat, lng = cell_center(cell)
    return {"lat": round(lat, 6), "lng": round(lng, 6)}


def _distance_m(a: dict[str, float] | None, b: dict[str, float] | None) -> int:
    if a is None or b is None:
        return 0
    p1, p2 = math.radians(a["lat"]), math.radians(b["lat"])
    dp, dl = p2 - p1, math.radians(b["lng"] - a["lng"])
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return round(2 * 6_371_000 * math.asin(math.sqrt(h)))


class Feed:
    def __init__(self, session: AsyncSession, provider_id: str, key: bytes, regions: frozenset[str]) -> None:
        self._session = session
        self._provider = provider_id
        self._key = key
        self._regions = regions

    def _trip(self, r: RentalFact) -> dict[str, Any]:
        start, end = _location(r.start_cell), _location(r.return_cell)
        return {
            "provider_id": self._provider,
            "trip_id": mds.trip_id(self._key, r.rental_id),
            "device_ids": [mds.device_id(r.bank_id)],
            "trip_type": "rental",
            "start_time": mds.ms(r.started_at),
            "end_time": mds.ms(r.ended_at),
            "duration": r.duration_seconds,
            "distance": _distance_m(start, end),
            "start_location": start,
            "end_location": end,
            "start_stop_id": mds.stop_id(r.cabinet_id),
            "end_stop_id": mds.stop_id(r.return_cabinet_id) if r.return_cabinet_id else None,
            "trip_attributes": {
                "start_division": r.start_division,
                "end_division": r.return_division,
                "purchased": r.purchased,
            },
            "actual_cost": r.fee_fen,
            "currency": "CNY",
        }

    async def trips(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return [self._trip(r) for r in await repo.trips_ended(self._session, start, end, self._regions)]

    def _events_of(self, rentals: Sequence[RentalFact], start: datetime, end: datetime) -> list[dict[str, Any]]:
        events = []
        for r in rentals:
            trip = mds.trip_id(self._key, r.rental_id)
            if start <= r.started_at < end:
                events.append(self._event(r, "trip_start", "on_trip", r.started_at, r.start_cell, trip))
            if r.ended_at is not None and start <= r.ended_at < end:
                kind, state = ("trip_end", "missing") if r.purchased else ("trip_end", "available")
                events.append(self._event(r, kind, state, r.ended_at, r.return_cell, trip))
        return sorted(events, key=lambda e: (e["timestamp"], e["event_id"]))

    def _event(self, r: RentalFact, kind: str, state: str, at: datetime, cell: str | None, trip: str) -> dict[str, Any]:
        return {
            "event_id": mds.event_id(self._key, r.rental_id, kind),
            "provider_id": self._provider,
            "device_id": mds.device_id(r.bank_id),
            "event_types": [kind],
            "vehicle_state": state,
            "timestamp": mds.ms(at),
            "location": _location(cell),
            "trip_ids": [trip],
        }

    async def events(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        rentals = await repo.rentals_touching(self._session, start, end, self._regions)
        return self._events_of(rentals, start, end)

    async def vehicles(self) -> list[dict[str, Any]]:
        return [
            {
                "device_id": mds.device_id(b.bank_id),
                "provider_id": self._provider,
                "vehicle_id": b.bank_id,
                "vehicle_type": "other",
                "propulsion_types": ["electric"],
                "vehicle_attributes": {"kind": "power_bank", "model": b.model},
            }
            for b in await repo.banks(self._session, self._regions)
        ]

    async def vehicle_status(self) -> list[dict[str, Any]]:
        return [
            {
                "device_id": mds.device_id(b.bank_id),
                "provider_id": self._provider,
                "vehicle_state": VEHICLE_STATE.get(b.state or "", "unknown"),
                "last_event": {"timestamp": mds.ms(b.state_at), "location": _location(b.cell)},
                "current_stop_id": mds.stop_id(b.cabinet_id) if b.state == "in_cabinet" and b.cabinet_id else None,
                "division": b.division,
            }
            for b in await repo.banks(self._session, self._regions)
        ]

    async def telemetry(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Bank module positions of the hour, as cell centres; a point taken during a rental carries its
        trip's keyed id, like the trip and its events."""
        return [
            {
                "provider_id": self._provider,
                "device_id": mds.device_id(p.bank_id),
                "telemetry_id": mds.telemetry_id(self._key, p.bank_id, p.at),
                "timestamp": mds.ms(p.at),
                "trip_ids": sorted(mds.trip_id(self._key, r) for r in rentals),
                "location": _location(p.cell),
                "battery_percent": p.battery_pct,
            }
            for p, rentals in await repo.positions(self._session, start, end, self._regions)
        ]

    async def stops(self) -> list[dict[str, Any]]:
        return [
            {
                "stop_id": mds.stop_id(c.cabinet_id),
                "name": c.cabinet_id,
                "last_reported": mds.ms(c.stock_at or c.as_of),
                "location": _location(c.cell),
                "status": {"available": True},
                "num_vehicles_available": {"other": c.banks_present or 0},
                "division": c.division,
            }
            for c in await repo.cabinets(self._session, self._regions)
        ]

    async def report_csv(self, start: datetime, end: datetime) -> str:
        """MDS reports: trips and distinct riders per division that month; counts under k=10 redacted."""
        by: dict[str, tuple[set[Any], set[Any]]] = defaultdict(lambda: (set(), set()))
        for division, rental_id, user_id in await repo.trips_in_month(self._session, start, end, self._regions):
            trips, riders = by[division or ""]
            trips.add(rental_id)
            riders.add(user_id)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            [
                "provider_id",
                "start_date",
                "duration",
                "special_group_type",
                "geography_id",
                "vehicle_type",
                "trip_count",
                "rider_count",
            ]
        )
        for division, (trips, riders) in sorted(by.items()):
            n_trips = len(trips) if len(trips) >= K_ANONYMITY else -1
            n_riders = len(riders) if len(riders) >= K_ANONYMITY else -1
            writer.writerow(
                [self._provider, start.date().isoformat(), "P1M", "all_riders", division, "other", n_trips, n_riders]
            )
        return out.getvalue()
