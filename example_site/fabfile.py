# `fab deploy` (or `fab deploy --settings sandboxconf.py` for a rehearsal on the local sandbox).
from deploy.tasks import deploy, renew, server_setup  # noqa: F401
