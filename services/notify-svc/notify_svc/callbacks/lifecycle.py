"""A call-back request's lifecycle: the only table of allowed transitions, and `apply`, the only code
that sets `CallbackRequest.status`. A call that was not answered or failed may be placed again."""

from kit.errors import Conflict
from notify_svc.models import CallbackRequest, CallbackStatus

S = CallbackStatus

TRANSITIONS: dict[tuple[CallbackStatus, str], CallbackStatus] = {
    (S.REQUESTED, "place"): S.CALLING,
    (S.NO_ANSWER, "place"): S.CALLING,
    (S.FAILED, "place"): S.CALLING,
    (S.CALLING, "answered"): S.ANSWERED,
    (S.CALLING, "no_answer"): S.NO_ANSWER,
    (S.CALLING, "failed"): S.FAILED,
    (S.REQUESTED, "refused"): S.FAILED,  # the provider refused the number when asked to place it
    (S.NO_ANSWER, "refused"): S.FAILED,
    (S.FAILED, "refused"): S.FAILED,
    (S.REQUESTED, "cancel"): S.CANCELLED,
    (S.NO_ANSWER, "cancel"): S.CANCELLED,
    (S.FAILED, "cancel"): S.CANCELLED,
}
OPEN = frozenset({S.REQUESTED, S.CALLING, S.NO_ANSWER, S.FAILED})


class CallbackTransitionNotAllowed(Conflict):
    code = "callback_transition_not_allowed"
    title = "Not allowed in the call-back request's current status"


def allowed(callback: CallbackRequest, action: str) -> bool:
    return (CallbackStatus(callback.status), action) in TRANSITIONS


def apply(callback: CallbackRequest, action: str) -> None:
    target = TRANSITIONS.get((CallbackStatus(callback.status), action))
    if target is None:
        raise CallbackTransitionNotAllowed(
            f"A call-back that is {callback.status} cannot {action}", callback_status=callback.status
        )
    callback.status = target.value
