"""The rental lifecycle is one transition table (issue 14). A property test drives the real handlers
(device outcomes, returns, charge outcomes, the unlocking sweeper, payments, support's corrections) in
random orders with retries against the real database: every change of state is one of the table's, and
once the platform stops sending events (a return, the charge's outcome) the rental rests in a final state."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_svc import lifecycle
from billing_svc.models import Rental, RentalState
from billing_svc.rentals import service
from billing_svc.support import service as support
from contracts.events import BankEjected, BankReturned, ChargeFailed, ChargeSettled, EjectFailed, EjectFailureReason
from kit.auth import Principal
from kit.db import unit_of_work
from kit.errors import BusinessError

pytestmark = pytest.mark.integration

S = RentalState
STEPS = [
    "ejected",
    "eject_failed",
    "sweep",
    "returned",
    "charge_settled",
    "charge_failed",
    "pay",
    "waive",
    "support_end",
]


def test_the_table_is_closed_and_every_state_can_reach_a_final_one() -> None:
    assert set(lifecycle.TRANSITIONS) == set(RentalState)
    for state in RentalState:
        seen, todo = {state}, [state]
        while todo:
            for nxt in lifecycle.TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen & lifecycle.FINAL, f"{state} never reaches a final state"
    assert not lifecycle.TRANSITIONS[S.SETTLED]


def test_an_illegal_transition_is_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    rental = Rental(id=uuid.uuid4(), state=S.SETTLED.value)
    with pytest.raises(lifecycle.IllegalTransition):
        lifecycle.move(rental, S.ACTIVE)
    assert rental.state == S.SETTLED.value
    assert "illegal rental transition refused" in caplog.text


@pytest.fixture
def transitions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    taken: list[tuple[str, str]] = []
    real = lifecycle.move

    def recording(rental: Rental, target: RentalState) -> None:
        before = rental.state
        real(rental, target)
        taken.append((before, target.value))

    monkeypatch.setattr(lifecycle, "move", recording)
    return taken


async def _new_rental(billing: Any) -> Rental:
    now = datetime.now(UTC)
    rental = Rental(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        code=f"BANK-{uuid.uuid4().hex[:8]}",
        state=lifecycle.INITIAL.value,
        command_id=uuid.uuid4(),
        user_exclusive=False,
        requested_at=now - timedelta(minutes=30),
        eject_deadline=now,
        period_minutes=60,
        price_per_period_fen=300,
        free_minutes=0,
        daily_cap_fen=3000,
    )
    async with unit_of_work(billing.runtime.sessionmaker) as session:
        session.add(rental)
    return rental


async def _step(billing: Any, rental: Rental, step: str, clock: datetime) -> None:
    runtime = billing.runtime
    async with unit_of_work(runtime.sessionmaker) as session:
        current = await session.get(Rental, rental.id)
        assert current is not None
        charge = {"charge_id": current.charge_id or uuid.uuid4(), "rental_id": rental.id, "user_id": rental.user_id}
        fee = current.fee_fen or 1
        if step == "ejected":
            data = BankEjected(
                command_id=rental.command_id,
                rental_id=rental.id,
                bank_id=rental.code,
                cabinet_id="CAB-P",
                slot=1,
                battery_pct=90,
                ejected_at=clock,
            )
            await service.on_bank_ejected(session, runtime, data)
        elif step == "eject_failed":
            failed = EjectFailed(
                command_id=rental.command_id,
                rental_id=rental.id,
                bank_id=None,
                cabinet_id="CAB-P",
                reason=EjectFailureReason.MOTOR_FAULT,
            )
            await service.on_eject_failed(session, runtime, failed)
        elif step == "sweep":
            await service.expire_unlocking(session, runtime, clock + timedelta(days=1))
        elif step == "returned":
            returned = BankReturned(
                report_id=uuid.uuid4().hex,
                bank_id=rental.code,
                cabinet_id="CAB-P",
                slot=2,
                battery_pct=80,
                returned_at=clock,
                device_reported_at=clock,
                received_at=clock,
            )
            await service.on_bank_returned(session, runtime, returned)
        elif step == "charge_settled":
            settled = ChargeSettled(**charge, amount_fen=fee, balance_fen=0, settled_at=clock)
            await service.on_charge_settled(session, settled)
        elif step == "charge_failed":
            await service.on_charge_failed(session, ChargeFailed(**charge, amount_fen=fee, reason="insufficient"))
        elif step == "pay":
            await service.pay_unpaid(session, runtime, rental.user_id, rental.id)
        else:
            actor = Principal("support-1", kind="admin", roles=frozenset({"support"}))
            await support.correct(
                session,
                runtime,
                actor,
                rental.id,
                idempotency_key=uuid.uuid4().hex,
                note="property test",
                fee_fen=0 if step == "waive" else None,
                ended_at=clock if step == "support_end" else None,
                dispute_id=None,
            )


async def _state(billing: Any, rental: Rental) -> str:
    async with billing.runtime.sessionmaker() as session:
        current = await session.get(Rental, rental.id)
        assert current is not None
        return current.state


@given(steps=st.lists(st.tuples(st.sampled_from(STEPS), st.booleans()), min_size=1, max_size=12))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
async def test_random_orders_retries_and_corrections_take_only_allowed_transitions(
    billing: Any, transitions: list[tuple[str, str]], steps: list[tuple[str, bool]]
) -> None:
    transitions.clear()
    rental = await _new_rental(billing)
    clock = datetime.now(UTC) - timedelta(minutes=20)
    for step, retried in steps:
        clock += timedelta(minutes=1)
        for _ in range(2 if retried else 1):  # a redelivered event, a repeated request
            try:
                await _step(billing, rental, step, clock)
            except lifecycle.IllegalTransition:
                raise
            except BusinessError:
                pass  # a refusal the API answers with a 4xx (nothing to pay, not correctable...)
    # The world goes quiet: the bank comes back and the last charge gets its outcome.
    for step in ("sweep", "returned", "charge_settled"):
        clock += timedelta(minutes=1)
        await _step(billing, rental, step, clock)
    final = await _state(billing, rental)
    if final == S.UNPAID.value:  # the user pays, and that charge settles
        await _step(billing, rental, "pay", clock)
        await _step(billing, rental, "charge_settled", clock)
        final = await _state(billing, rental)
    assert transitions, "no transition at all"
    assert all(lifecycle.allowed(S(a), S(b)) for a, b in transitions), transitions
    assert S(final) in lifecycle.FINAL, (final, steps)
