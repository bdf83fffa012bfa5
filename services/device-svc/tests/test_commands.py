"""Commands answer at once when they cannot be carried out: an expired eject is never sent late."""

import pytest

from contracts.events import EjectFailureReason

pytestmark = pytest.mark.integration


async def test_an_expired_eject_is_refused_and_never_sent(service, online, tap, eject):
    cab = await online("CAB-0001")
    cmd = await eject("PB-000001", deadline_s=-1)  # e.g. the command waited in a lagging consumer
    failed = await tap.wait_for("device.eject.failed", command_id=cmd.command_id)
    assert failed.reason == EjectFailureReason.COMMAND_EXPIRED
    with pytest.raises(TimeoutError):
        await cab.receive(timeout=0.5)
    # The bank is still there for the next, valid command.
    fresh = await eject("PB-000001")
    sent = await cab.receive()
    assert (sent.type, sent.cmd_id, sent.bank_id) == ("eject", str(fresh.command_id), "PB-000001")
