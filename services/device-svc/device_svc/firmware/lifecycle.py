"""The two lifecycles of firmware updates, each one table: (state, action) -> next state. Nothing else
changes `FirmwareRollout.state` or `FirmwareUpdate.state`; `rollout_next` / `update_next` are the only ways.

A rollout:

    running ──pause──▶ paused ──resume──▶ running
    running ──halt (failures past the threshold)──▶ halted ──resume (operator)──▶ running
    running ──complete (no cabinet left pending or updating)──▶ completed
    running / paused / halted ──cancel──▶ cancelled       (paused may halt too: a running update failed)

One cabinet's update (the device's reports are the actions `downloading` … `rolled_back`; a stage may be
skipped, none goes back: a late report of an earlier stage changes nothing):

    pending ──send──▶ sent ──downloading──▶ downloading ──verified──▶ verified ──installing──▶ installing
       │                                                                        ──rebooting──▶ rebooting
       └──cancel──▶ cancelled        any of sent … rebooting ──done──▶ done | ──failed / timeout──▶ failed
                                                              ──rolled_back──▶ rolled_back
An update already sent is not cancelled with its rollout: the cabinet is mid-install; its result is recorded.
"""

from enum import StrEnum

from contracts.events import FirmwareRolloutState as R
from contracts.events import FirmwareUpdateState as U
from contracts.mqtt import FirmwareStage
from kit.errors import Conflict


class RolloutAction(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    HALT = "halt"
    COMPLETE = "complete"


ROLLOUT_TRANSITIONS: dict[tuple[R, RolloutAction], R] = {
    (R.RUNNING, RolloutAction.PAUSE): R.PAUSED,
    (R.PAUSED, RolloutAction.RESUME): R.RUNNING,
    (R.HALTED, RolloutAction.RESUME): R.RUNNING,
    (R.RUNNING, RolloutAction.HALT): R.HALTED,
    (R.PAUSED, RolloutAction.HALT): R.HALTED,
    (R.RUNNING, RolloutAction.COMPLETE): R.COMPLETED,
    (R.RUNNING, RolloutAction.CANCEL): R.CANCELLED,
    (R.PAUSED, RolloutAction.CANCEL): R.CANCELLED,
    (R.HALTED, RolloutAction.CANCEL): R.CANCELLED,
}


class UpdateAction(StrEnum):
    SEND = "send"
    CANCEL = "cancel"
    TIMEOUT = "timeout"
    # what the cabinet reports (contracts.mqtt.FirmwareStage)
    DOWNLOADING = "downloading"
    VERIFIED = "verified"
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    DONE = "done"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


A = UpdateAction
UPDATE_TRANSITIONS: dict[tuple[U, UpdateAction], U] = {
    (U.PENDING, A.SEND): U.SENT,
    (U.PENDING, A.CANCEL): U.CANCELLED,
    (U.SENT, A.DOWNLOADING): U.DOWNLOADING,
    (U.SENT, A.VERIFIED): U.VERIFIED,
    (U.SENT, A.INSTALLING): U.INSTALLING,
    (U.SENT, A.REBOOTING): U.REBOOTING,
    (U.SENT, A.DONE): U.DONE,
    (U.SENT, A.FAILED): U.FAILED,
    (U.SENT, A.ROLLED_BACK): U.ROLLED_BACK,
    (U.SENT, A.TIMEOUT): U.FAILED,
    (U.DOWNLOADING, A.DOWNLOADING): U.DOWNLOADING,  # progress
    (U.DOWNLOADING, A.VERIFIED): U.VERIFIED,
    (U.DOWNLOADING, A.INSTALLING): U.INSTALLING,
    (U.DOWNLOADING, A.REBOOTING): U.REBOOTING,
    (U.DOWNLOADING, A.DONE): U.DONE,
    (U.DOWNLOADING, A.FAILED): U.FAILED,
    (U.DOWNLOADING, A.ROLLED_BACK): U.ROLLED_BACK,
    (U.DOWNLOADING, A.TIMEOUT): U.FAILED,
    (U.VERIFIED, A.INSTALLING): U.INSTALLING,
    (U.VERIFIED, A.REBOOTING): U.REBOOTING,
    (U.VERIFIED, A.DONE): U.DONE,
    (U.VERIFIED, A.FAILED): U.FAILED,
    (U.VERIFIED, A.ROLLED_BACK): U.ROLLED_BACK,
    (U.VERIFIED, A.TIMEOUT): U.FAILED,
    (U.INSTALLING, A.REBOOTING): U.REBOOTING,
    (U.INSTALLING, A.DONE): U.DONE,
    (U.INSTALLING, A.FAILED): U.FAILED,
    (U.INSTALLING, A.ROLLED_BACK): U.ROLLED_BACK,
    (U.INSTALLING, A.TIMEOUT): U.FAILED,
    (U.REBOOTING, A.DONE): U.DONE,
    (U.REBOOTING, A.FAILED): U.FAILED,
    (U.REBOOTING, A.ROLLED_BACK): U.ROLLED_BACK,
    (U.REBOOTING, A.TIMEOUT): U.FAILED,
}

ACTIVE = frozenset({U.SENT, U.DOWNLOADING, U.VERIFIED, U.INSTALLING, U.REBOOTING})  # the cabinet is at it
FAILURES = frozenset({U.FAILED, U.ROLLED_BACK})
FINISHED = frozenset({U.DONE, *FAILURES})
OPEN_ROLLOUTS = frozenset({R.RUNNING, R.PAUSED, R.HALTED})


class RolloutTransitionNotAllowed(Conflict):
    code = "rollout_transition_not_allowed"
    title = "The firmware rollout cannot do that in its current state"


def rollout_next(state: R, action: RolloutAction) -> R:
    try:
        return ROLLOUT_TRANSITIONS[(state, action)]
    except KeyError:
        raise RolloutTransitionNotAllowed(
            f"A rollout that is {state.value} cannot {action.value}", rollout_state=state.value, action=action.value
        ) from None


def update_next(state: U, action: UpdateAction) -> U | None:
    """The next state, or None when the action does not apply (a late or repeated report: ignored)."""
    return UPDATE_TRANSITIONS.get((state, action))


def action_of(stage: FirmwareStage) -> UpdateAction:
    return UpdateAction(stage.value)
