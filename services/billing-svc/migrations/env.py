import billing_svc.users  # noqa: F401  (registers the user_access table on the metadata)
from billing_svc.models import metadata
from kit.migrations import run_migrations

run_migrations(metadata)
