"""A campaign's lifecycle: the only table of allowed transitions, and `apply`, the only code that sets
`Campaign.status`."""

from kit.errors import Conflict
from notify_svc.models import Campaign, CampaignStatus

S = CampaignStatus

TRANSITIONS: dict[tuple[CampaignStatus, str], CampaignStatus] = {
    (S.DRAFT, "schedule"): S.SCHEDULED,
    (S.SCHEDULED, "schedule"): S.SCHEDULED,  # a new time
    (S.SCHEDULED, "start"): S.SENDING,
    (S.SENDING, "finish"): S.SENT,
    (S.DRAFT, "cancel"): S.CANCELLED,
    (S.SCHEDULED, "cancel"): S.CANCELLED,
    (S.SENDING, "cancel"): S.CANCELLED,  # the batches not yet written are not sent
}


class CampaignTransitionNotAllowed(Conflict):
    code = "campaign_transition_not_allowed"
    title = "Not allowed in the campaign's current status"


def apply(campaign: Campaign, action: str) -> None:
    target = TRANSITIONS.get((CampaignStatus(campaign.status), action))
    if target is None:
        raise CampaignTransitionNotAllowed(
            f"A {campaign.status} campaign cannot {action}", campaign_status=campaign.status
        )
    campaign.status = target.value
