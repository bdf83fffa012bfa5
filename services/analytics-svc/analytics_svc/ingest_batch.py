"""The frequent facts, applied set-based: a fetch of up to INGEST_BATCH_MAX events becomes a few statements
in one transaction instead of one transaction of several statements per event (issue 11's 5,000 events/s).

Every function equals applying its events one at a time in arrival order: events whose business keys differ
commute, so a statement may take many of them at once, and events that share a key (copies, a bank rented
twice in one fetch) go in successive `rounds`, the k-th event of each key in round k. Within one fetch the
kinds are applied in a fixed order (registrations, stock reports, ejects, returns, starts, ends); that is
one of the arrival orders the store is already independent of (tests/test_late_and_duplicate_events.py)."""

from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import date, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc import active_users
from contracts.events import (
    BankEjected,
    BankReturned,
    DeviceTelemetryReported,
    RentalEnded,
    RentalStarted,
    UserRegistered,
)
from contracts.regions import RegionRef

T = TypeVar("T")


def rounds(items: Iterable[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    """Round k holds the k-th item of every key, in arrival order: no round has a key twice."""
    seen: dict[Hashable, int] = {}
    out: list[list[T]] = []
    for item in items:
        k = key(item)
        n = seen.get(k, 0)
        seen[k] = n + 1
        if n == len(out):
            out.append([])
        out[n].append(item)
    return out


def unnest(rows: Sequence[dict[str, Any]], types: dict[str, str]) -> tuple[str, dict[str, list[Any]]]:
    """`SELECT * FROM unnest(...)` of these rows' columns, typed, and its parameters: one statement text for any
    number of rows (a multi-row VALUES is compiled again for every row count, which costs more than the insert)."""
    arrays = ", ".join(f"CAST(:{column} AS {pg}[])" for column, pg in types.items())
    sql = f"SELECT * FROM unnest({arrays}) AS v({', '.join(types)})"  # noqa: S608 (column names are ours)
    return sql, {column: [row[column] for row in rows] for column in types}


async def insert_rows(
    session: AsyncSession, table: str, rows: Sequence[dict[str, Any]], types: dict[str, str], conflict: str
) -> Any:
    source, params = unnest(rows, types)
    sql = f"INSERT INTO {table} ({', '.join(types)}) {source} {conflict}"
    return await session.execute(text(sql), params)


async def mark_dirty(session: AsyncSession, started: Iterable[datetime]) -> None:
    """The UTC hours these rentals started in need their rollup rebuilt."""
    times = list(set(started))
    if times:
        await session.execute(
            text(
                "INSERT INTO rollup_dirty_hours (hour) SELECT DISTINCT date_trunc('hour', t) "
                "FROM unnest(CAST(:t AS timestamptz[])) AS t ON CONFLICT DO NOTHING"
            ),
            {"t": times},
        )


async def remember_regions(session: AsyncSession, seen: Iterable[tuple[str, RegionRef | None, datetime]]) -> None:
    """Each cabinet's region, the newest by event time (the newest of the fetch is the only one that can win)."""
    newest: dict[str, tuple[RegionRef, datetime]] = {}
    for cabinet_id, region, at in seen:
        if region is not None and (cabinet_id not in newest or newest[cabinet_id][1] < at):
            newest[cabinet_id] = (region, at)
    if not newest:
        return
    await insert_rows(
        session,
        "cabinet_regions",
        [
            {"cabinet_id": cabinet, "division": region.division_code, "cell": region.cell, "as_of": at}
            for cabinet, (region, at) in newest.items()
        ],
        {"cabinet_id": "text", "division": "text", "cell": "text", "as_of": "timestamptz"},
        "ON CONFLICT (cabinet_id) DO UPDATE SET division = excluded.division, cell = excluded.cell, "
        "as_of = excluded.as_of WHERE cabinet_regions.as_of < excluded.as_of",
    )


Place = tuple[str | None, str | None]  # division, cell


async def cabinet_regions(session: AsyncSession, cabinet_ids: Iterable[str]) -> dict[str, Place]:
    ids = list(set(cabinet_ids))
    if not ids:
        return {}
    rows = await session.execute(
        text("SELECT cabinet_id, division, cell FROM cabinet_regions WHERE cabinet_id = ANY(:ids)"), {"ids": ids}
    )
    return {row.cabinet_id: (row.division, row.cell) for row in rows}


def _newest(column: str, at: str, tie: str) -> str:
    """`column` takes the incoming value when the incoming register is newer (ties broken by `tie`, so the
    result is the same whatever order two facts of one instant arrive in)."""
    newer = (
        f"bank_facts.{at} IS NULL OR (excluded.{at}, coalesce(excluded.{tie}::text, '')) "
        f">= (bank_facts.{at}, coalesce(bank_facts.{tie}::text, ''))"
    )
    take = f"excluded.{at} IS NOT NULL AND ({newer})"
    return f"{column} = CASE WHEN {take} THEN excluded.{column} ELSE bank_facts.{column} END"


async def set_banks(session: AsyncSession, banks: Sequence[dict[str, Any]], *, keep_place: bool = False) -> None:
    """Each bank's state and place, each register keeping its newest value by event time, so the result does
    not depend on the order facts arrive in (`rounds` applies one bank's rows in arrival order). Rows: bank_id,
    state, state_at, cabinet_id, division, cell, model. `keep_place`: a fault changes the state only."""
    rows = [
        {**row, "cabinet_id": None, "division": None, "cell": None, "place_at": None}
        if keep_place
        else {**row, "place_at": row["state_at"]}
        for row in banks
    ]
    sets = [_newest(column, "state_at", "state") for column in ("state", "state_at")]
    if not keep_place:
        sets += [_newest(column, "place_at", "cabinet_id") for column in ("cabinet_id", "division", "cell", "place_at")]
    sets.append("model = coalesce(bank_facts.model, excluded.model)")
    for batch in rounds(rows, lambda row: row["bank_id"]):
        await insert_rows(
            session, "bank_facts", batch, BANK_COLUMNS, f"ON CONFLICT (bank_id) DO UPDATE SET {', '.join(sets)}"
        )


BANK_COLUMNS = {
    "bank_id": "text",
    "state": "text",
    "state_at": "timestamptz",
    "cabinet_id": "text",
    "division": "text",
    "cell": "text",
    "model": "text",
    "place_at": "timestamptz",
}


def bank_row(bank_id: str, state: str, at: datetime, **place: Any) -> dict[str, Any]:
    region: RegionRef | None = place.get("region")
    return {
        "bank_id": bank_id,
        "state": state,
        "state_at": at,
        "cabinet_id": place.get("cabinet_id"),
        "division": region.division_code if region else None,
        "cell": region.cell if region else None,
        "model": place.get("model"),
    }


async def bank_attributes(
    session: AsyncSession, readings: Sequence[tuple[str, datetime, datetime | None, int | None, int | None]]
) -> None:
    """(bank, at, in service since, cycles, health): the earliest time in service, and the cycles and the
    health each from the newest reading that carries it. A bank not seen yet is kept (no state, no place) so a
    reading is never lost to the order it arrives in."""
    for batch in rounds(readings, lambda reading: reading[0]):
        rows = [
            {
                "bank_id": bank,
                "in_service_at": in_service,
                "charge_cycles": cycles,
                "cycles_at": at if cycles is not None else None,
                "health_pct": health,
                "health_at": at if health is not None else None,
            }
            for bank, at, in_service, cycles, health in batch
            if in_service is not None or cycles is not None or health is not None
        ]
        if not rows:
            continue
        sets = [
            "in_service_at = least(bank_facts.in_service_at, excluded.in_service_at)",
            *(_newest(column, "cycles_at", "charge_cycles") for column in ("charge_cycles", "cycles_at")),
            *(_newest(column, "health_at", "health_pct") for column in ("health_pct", "health_at")),
        ]
        await insert_rows(
            session,
            "bank_facts",
            rows,
            {
                "bank_id": "text",
                "in_service_at": "timestamptz",
                "charge_cycles": "int",
                "cycles_at": "timestamptz",
                "health_pct": "int",
                "health_at": "timestamptz",
            },
            f"ON CONFLICT (bank_id) DO UPDATE SET {', '.join(sets)}",
        )


class Batch:
    """The set-based appliers, with the zone active-user days are counted in."""

    def __init__(self, zone: ZoneInfo) -> None:
        self._zone = zone

    def _day(self, at: datetime) -> date:
        return at.astimezone(self._zone).date()

    async def _user_days(
        self, session: AsyncSession, days: Iterable[tuple[date, Any, str]], first_rentals: dict[Any, datetime]
    ) -> None:
        """Users active on local days, in divisions; and, for new rentals, each user's earliest start (the
        exact active-user counters follow both: `active_users.py`)."""
        days = set(days)
        rows = [{"day": d, "user_id": u, "division": division} for d, u, division in days]
        if rows:
            types = {"day": "date", "user_id": "uuid", "division": "text"}
            await insert_rows(session, "user_days", rows, types, "ON CONFLICT DO NOTHING")
        await active_users.record(session, self._zone, days, first_rentals)

    async def users_registered(self, session: AsyncSession, events: Sequence[UserRegistered]) -> None:
        """The registration time and birth year; the year is not taken for a user already known deregistered
        (the deregistration arrived first and erased it)."""
        for batch in rounds(events, lambda e: e.user_id):
            await insert_rows(
                session,
                "user_facts",
                [{"user_id": e.user_id, "registered_at": e.registered_at, "birth_year": e.birth_year} for e in batch],
                {"user_id": "uuid", "registered_at": "timestamptz", "birth_year": "smallint"},
                "ON CONFLICT (user_id) DO UPDATE SET registered_at = excluded.registered_at, "
                "birth_year = CASE WHEN user_facts.deregistered_at IS NULL THEN excluded.birth_year END "
                "WHERE user_facts.registered_at IS NULL",
            )

    async def telemetry(self, session: AsyncSession, events: Sequence[DeviceTelemetryReported]) -> None:
        banks = [
            (e.device_id, e.reported_at, None, e.charge_cycles, e.health_pct)
            for e in events
            if e.device_kind == "bank" and (e.charge_cycles is not None or e.health_pct is not None)
        ]
        await bank_attributes(session, banks)
        placed = [e for e in events if e.device_kind == "bank" and e.region is not None and e.region.cell]
        if placed:
            await insert_rows(
                session,
                "bank_position_facts",
                [
                    {
                        "bank_id": e.device_id,
                        "at": e.reported_at,
                        "cell": e.region.cell if e.region else None,
                        "division": e.region.division_code if e.region else None,
                        "battery_pct": e.battery_pct,
                    }
                    for e in placed
                ],
                {"bank_id": "text", "at": "timestamptz", "cell": "text", "division": "text", "battery_pct": "int"},
                "ON CONFLICT DO NOTHING",
            )
        stock = [e for e in events if e.device_kind != "bank" and e.banks_present is not None]  # heartbeats: none
        await remember_regions(session, ((e.device_id, e.region, e.reported_at) for e in stock))
        for batch in rounds(stock, lambda e: e.device_id):
            await insert_rows(
                session,
                "cabinet_regions",
                [
                    {
                        "cabinet_id": e.device_id,
                        "as_of": e.reported_at,
                        "banks_present": e.banks_present,
                        "banks_rentable": e.banks_rentable,
                        "slot_count": e.slot_count,
                        "stock_at": e.reported_at,
                    }
                    for e in batch
                ],
                {
                    "cabinet_id": "text",
                    "as_of": "timestamptz",
                    "banks_present": "int",
                    "banks_rentable": "int",
                    "slot_count": "int",
                    "stock_at": "timestamptz",
                },
                "ON CONFLICT (cabinet_id) DO UPDATE SET banks_present = excluded.banks_present, "
                "banks_rentable = excluded.banks_rentable, "
                "slot_count = coalesce(excluded.slot_count, cabinet_regions.slot_count), stock_at = excluded.stock_at "
                "WHERE cabinet_regions.stock_at IS NULL OR cabinet_regions.stock_at < excluded.stock_at",
            )

    async def banks_ejected(self, session: AsyncSession, events: Sequence[BankEjected]) -> None:
        await remember_regions(session, ((e.cabinet_id, e.region, e.ejected_at) for e in events))
        await set_banks(
            session,
            [
                bank_row(
                    e.bank_id, "rented", e.ejected_at, cabinet_id=e.cabinet_id, region=e.region, model=e.bank_model
                )
                for e in events
            ],
        )
        await bank_attributes(
            session,
            [(e.bank_id, e.ejected_at, e.bank_in_service_at, e.bank_charge_cycles, e.bank_health_pct) for e in events],
        )
        placed = [e for e in events if e.region is not None]
        for batch in rounds(placed, lambda e: e.rental_id):
            found = await session.execute(
                text(
                    "UPDATE rental_facts r SET start_division = v.division, start_cell = v.cell "
                    "FROM unnest(CAST(:r AS uuid[]), CAST(:d AS text[]), CAST(:c AS text[])) "
                    "AS v(rental_id, division, cell) "
                    "WHERE r.rental_id = v.rental_id RETURNING r.started_at, r.user_id, v.division"
                ),
                {
                    "r": [e.rental_id for e in batch],
                    "d": [e.region.division_code if e.region else None for e in batch],
                    "c": [e.region.cell if e.region else None for e in batch],
                },
            )
            started = found.all()
            await self._user_days(
                session, ((self._day(s.started_at), s.user_id, s.division or "") for s in started), {}
            )
            # A day counted under an unknown division before the region arrived is now under its division.
            known = [(self._day(s.started_at), s.user_id) for s in started if s.division]
            if known:
                await session.execute(
                    text(
                        "DELETE FROM user_days u "
                        "USING unnest(CAST(:d AS date[]), CAST(:u AS uuid[])) AS v(day, user_id) "
                        "WHERE u.day = v.day AND u.user_id = v.user_id AND u.division = ''"
                    ),
                    {"d": [d for d, _ in known], "u": [u for _, u in known]},
                )
            await mark_dirty(session, (s.started_at for s in started))

    async def banks_returned(self, session: AsyncSession, events: Sequence[BankReturned]) -> None:
        await insert_rows(
            session,
            "return_facts",
            [
                {
                    "report_id": e.report_id,
                    "bank_id": e.bank_id,
                    "cabinet_id": e.cabinet_id,
                    "slot": e.slot,
                    "battery_pct": e.battery_pct,
                    "returned_at": e.returned_at,
                    "clock_adjusted": e.clock_adjusted,
                    "division": e.region.division_code if e.region else None,
                    "cell": e.region.cell if e.region else None,
                }
                for e in events
            ],
            {
                "report_id": "text",
                "bank_id": "text",
                "cabinet_id": "text",
                "slot": "int",
                "battery_pct": "int",
                "returned_at": "timestamptz",
                "clock_adjusted": "boolean",
                "division": "text",
                "cell": "text",
            },
            "ON CONFLICT ON CONSTRAINT uq_return_facts_cabinet_report DO NOTHING",
        )
        await remember_regions(session, ((e.cabinet_id, e.region, e.returned_at) for e in events))
        await set_banks(
            session,
            [
                bank_row(e.bank_id, "in_cabinet", e.returned_at, cabinet_id=e.cabinet_id, region=e.region)
                for e in events
            ],
        )
        # The rental each return ended, if `billing.rental.ended` came first without the region.
        placed = [e for e in events if e.region is not None]
        for batch in rounds(placed, lambda e: e.bank_id):
            fixed = await session.execute(
                text(
                    "UPDATE rental_facts r SET return_division = v.division, return_cell = v.cell "
                    "FROM unnest(CAST(:b AS text[]), CAST(:k AS text[]), CAST(:d AS text[]), CAST(:c AS text[]), "
                    "CAST(:at AS timestamptz[])) AS v(bank_id, cabinet_id, division, cell, at) "
                    "WHERE r.bank_id = v.bank_id AND r.return_cabinet_id = v.cabinet_id "
                    "AND r.return_division IS NULL AND (r.ended_at IS NULL OR r.ended_at <= v.at) "
                    "AND r.started_at <= v.at RETURNING r.started_at"
                ),
                {
                    "b": [e.bank_id for e in batch],
                    "k": [e.cabinet_id for e in batch],
                    "d": [e.region.division_code if e.region else None for e in batch],
                    "c": [e.region.cell if e.region else None for e in batch],
                    "at": [e.returned_at for e in batch],
                },
            )
            await mark_dirty(session, (row.started_at for row in fixed))

    async def rentals_started(self, session: AsyncSession, events: Sequence[RentalStarted]) -> None:
        regions = await cabinet_regions(session, (e.cabinet_id for e in events))
        for batch in rounds(events, lambda e: e.rental_id):
            # If `ended` was applied first, the fact exists already; the slot and a region are new.
            upserted = await insert_rows(
                session,
                "rental_facts",
                [
                    {
                        "rental_id": e.rental_id,
                        "user_id": e.user_id,
                        "bank_id": e.bank_id,
                        "cabinet_id": e.cabinet_id,
                        "slot": e.slot,
                        "started_at": e.started_at,
                        "start_division": regions.get(e.cabinet_id, (None, None))[0],
                        "start_cell": regions.get(e.cabinet_id, (None, None))[1],
                    }
                    for e in batch
                ],
                {
                    "rental_id": "uuid",
                    "user_id": "uuid",
                    "bank_id": "text",
                    "cabinet_id": "text",
                    "slot": "int",
                    "started_at": "timestamptz",
                    "start_division": "text",
                    "start_cell": "text",
                },
                "ON CONFLICT (rental_id) DO UPDATE SET slot = excluded.slot, "
                "start_division = coalesce(rental_facts.start_division, excluded.start_division), "
                "start_cell = coalesce(rental_facts.start_cell, excluded.start_cell) "
                "RETURNING rental_id, start_division",
            )
            division = {row.rental_id: row.start_division for row in upserted}
            first: dict[Any, datetime] = {}
            for e in batch:
                first[e.user_id] = min(first.get(e.user_id, e.started_at), e.started_at)
            await self._user_days(
                session,
                ((self._day(e.started_at), e.user_id, division.get(e.rental_id) or "") for e in batch),
                first,
            )
            await mark_dirty(session, (e.started_at for e in batch))

    async def rentals_ended(self, session: AsyncSession, events: Sequence[RentalEnded]) -> None:
        regions = await cabinet_regions(session, [c for e in events for c in (e.start_cabinet_id, e.return_cabinet_id)])
        none: Place = (None, None)
        for batch in rounds(events, lambda e: e.rental_id):
            rows = []
            for e in batch:
                start = regions.get(e.start_cabinet_id, none)
                back = none if e.purchased else regions.get(e.return_cabinet_id, none)
                rows.append(
                    {
                        "rental_id": e.rental_id,
                        "user_id": e.user_id,
                        "bank_id": e.bank_id,
                        "cabinet_id": e.start_cabinet_id,
                        "started_at": e.started_at,
                        "ended_at": e.ended_at,
                        "return_cabinet_id": e.return_cabinet_id,
                        "duration_seconds": e.duration_seconds,
                        "fee_fen": e.fee_fen,
                        "purchased": e.purchased,
                        "start_division": start[0],
                        "start_cell": start[1],
                        "return_division": back[0],
                        "return_cell": back[1],
                    }
                )
            await insert_rows(
                session,
                "rental_facts",
                rows,
                {
                    "rental_id": "uuid",
                    "user_id": "uuid",
                    "bank_id": "text",
                    "cabinet_id": "text",
                    "started_at": "timestamptz",
                    "ended_at": "timestamptz",
                    "return_cabinet_id": "text",
                    "duration_seconds": "int",
                    "fee_fen": "bigint",
                    "purchased": "boolean",
                    "start_division": "text",
                    "start_cell": "text",
                    "return_division": "text",
                    "return_cell": "text",
                },
                "ON CONFLICT (rental_id) DO UPDATE SET ended_at = excluded.ended_at, "
                "return_cabinet_id = excluded.return_cabinet_id, duration_seconds = excluded.duration_seconds, "
                "fee_fen = excluded.fee_fen, purchased = excluded.purchased, "
                "start_division = coalesce(rental_facts.start_division, excluded.start_division), "
                "start_cell = coalesce(rental_facts.start_cell, excluded.start_cell), "
                "return_division = coalesce(rental_facts.return_division, excluded.return_division), "
                "return_cell = coalesce(rental_facts.return_cell, excluded.return_cell)",
            )
            await set_banks(session, [bank_row(e.bank_id, "lost", e.ended_at) for e in batch if e.purchased])
            await mark_dirty(session, (e.started_at for e in batch))
