# `fab deploy` (or `fab deploy --settings sandboxconf.py` for a rehearsal on the local sandbox).
from deploy.tasks import deploy, releases, renew, rollback, server_setup, status  # noqa: F401
