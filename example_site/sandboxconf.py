# Rehearsal: the published site, deployed to the local sandbox instead of the real server.
# Start a sandbox (python -m deploy.sandbox), export PELICAN_HTTPS_SANDBOX as it says, then:
#   pelican content -s sandboxconf.py && fab deploy --settings sandboxconf.py
import os
import sys

sys.path.append(os.curdir)
from publishconf import *  # noqa: E402,F401,F403

from deploy.sandbox import rehearsal_settings  # noqa: E402

globals().update(rehearsal_settings(SITEURL))  # noqa: F405
