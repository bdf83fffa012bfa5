"""The borrow workflow behind `POST /v1/rentals`.

The answer depends on what the device does *after* our transaction committed, so this workflow
holds its own units of work (`kit.db.unit_of_work`, the kit's one commit point) instead of the
request-scoped SessionDep, which commits only once the endpoint returned; its checks and re-reads
use read sessions (`kit.db.read_sessionmaker`: no BEGIN/COMMIT round trips around a lookup):

1. in one read: replay an earlier request with the same Idempotency-Key; refuse a blocked user (403),
   a second open rental (409) and a user with an unpaid rental (402 unpaid_debt);
2. shed load (503 busy, nothing started) while earlier unlocks wait too long for their outcome, or
   when too little of the 5 s budget is left for a device to answer; check the balance with
   asset-credit-svc (402 / 503);
3. one transaction: the rental `unlocking` + the EjectBank command in the outbox. The command's deadline
   is cut from the request's budget, so its outcome always has `eject_answer_grace_s` to reach us;
4. after the commit, wait (woken by the outcome: in-process or by NOTIFY from another instance's
   consumer; a slow re-read of the database as the fallback) until the rental leaves `unlocking`, or
   until the budget ends; the rental is read when woken, not right after our own commit;
5. at the budget's end, decide in ONE transaction holding the rental's row lock, against the state
   machine: still `unlocking` -> `failed` (device_no_answer), committed before the user hears it.
   The consumer applying a device outcome takes the same lock, so the answer always agrees with the
   rental's state: an outcome applied first is answered (201 or its reason); one applied after is a
   late eject of a failed rental, which is revived free of charge (service.end_rental).
"""

import asyncio
import contextlib
import logging
import uuid
from uuid import UUID

from sqlalchemy.exc import IntegrityError

from billing_svc.models import Rental, RentalState
from billing_svc.rentals import repository, service
from billing_svc.rentals.errors import ActiveRentalExists, eject_error
from kit.app import Runtime
from kit.auth import Principal
from kit.db import read_sessionmaker, unit_of_work

log = logging.getLogger(__name__)


async def borrow(runtime: Runtime, user: Principal, code: str, idempotency_key: str | None) -> Rental:
    """The rental once it is active (or still unlocking: see `answer`); raises the problem otherwise."""
    loop = asyncio.get_running_loop()
    settings = service.settings_of(runtime)
    budget_end = loop.time() + settings.borrow_answer_budget_s
    user_id = user.user_id
    waiters = service.waiters_of(runtime)

    async with read_sessionmaker(runtime.engine)() as session:
        earlier = await service.check_borrower(session, settings, user_id, idempotency_key, code)
    if earlier is not None:
        return await _answer(runtime, earlier.id, budget_end)

    service.admit_borrow(runtime)
    await service.check_balance(runtime.http, settings, user.token)
    deadline = service.eject_deadline(settings, budget_left_s=budget_end - loop.time())

    rental_id = uuid.uuid4()
    with waiters.watch(rental_id) as woken:
        try:
            async with unit_of_work(runtime.sessionmaker) as session:
                await service.request_rental(
                    session,
                    runtime,
                    rental_id=rental_id,
                    user_id=user_id,
                    code=code,
                    idempotency_key=idempotency_key,
                    deadline=deadline,
                )
        except IntegrityError:
            # A concurrent request won: the same Idempotency-Key (replay it) or another open rental.
            async with read_sessionmaker(runtime.engine)() as session:
                earlier = await service.replay(session, user_id, idempotency_key, code)
                other = earlier or await repository.open_for_user(session, user_id)
            if earlier is not None:
                return await _answer(runtime, earlier.id, budget_end)
            raise ActiveRentalExists(rental_id=str(other.id) if other else None) from None
        rental = await _wait_outcome(runtime, rental_id, woken, budget_end, just_committed=True)
    return _outcome(rental)


async def _answer(runtime: Runtime, rental_id: UUID, budget_end: float) -> Rental:
    """Answer a replayed request: wait for its outcome if it is still unlocking (the first request,
    if it still waits, decides at its own budget's end, which comes first)."""
    with service.waiters_of(runtime).watch(rental_id) as woken:
        rental = await _wait_outcome(runtime, rental_id, woken, budget_end)
    return _outcome(rental)


async def _wait_outcome(
    runtime: Runtime, rental_id: UUID, woken: asyncio.Event, until: float, *, just_committed: bool = False
) -> Rental:
    """The rental once it left `unlocking`; at `until`, the decision of `service.give_up_waiting`.
    `just_committed`: the caller committed it `unlocking` while watching, so the first read is skipped
    (an outcome applied since then has set `woken` already)."""
    poll = service.settings_of(runtime).borrow_poll_interval_s
    loop = asyncio.get_running_loop()
    read = not just_committed
    while True:
        if read:
            async with read_sessionmaker(runtime.engine)() as session:
                rental = await repository.get(session, rental_id)
            assert rental is not None
            if rental.state != RentalState.UNLOCKING.value:
                return rental
        read = True
        remaining = until - loop.time()
        if remaining <= 0:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), min(remaining, poll))
        woken.clear()
    async with unit_of_work(runtime.sessionmaker) as session:
        return await service.give_up_waiting(session, runtime, rental_id)


def _outcome(rental: Rental) -> Rental:
    if rental.state == RentalState.FAILED.value:
        raise eject_error(rental.failure_reason)(rental_id=str(rental.id))
    assert rental.state != RentalState.UNLOCKING.value, "give_up_waiting decides every unlocking rental"
    return rental
