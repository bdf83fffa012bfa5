from kit.migrations import run_migrations
from user_svc.models import metadata

run_migrations(metadata)
