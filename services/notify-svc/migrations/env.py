from kit.migrations import run_migrations
from notify_svc.models import metadata

run_migrations(metadata)
