from contracts import Topic
from kit.app import ConsumerSpec, Runtime
from user_svc.audit_trail.service import append


def consumer_spec(_: Runtime) -> ConsumerSpec:
    return ConsumerSpec(
        topics=[Topic.STAFF_AUDIT], handlers={"audit.staff_action.recorded": append}, name="audit-trail"
    )
