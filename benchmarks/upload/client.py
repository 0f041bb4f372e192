"""One upload as `fab deploy` does it, as a process of its own (what the benchmark times).

Same calls and order as deploy/pipeline.py, minus the certificate and nginx stages (and
their Fabric connection): hash the output while connecting, take the lock (which also reads
the live manifest), stage the release, switch `current`, prune, release the lock.

    python3 benchmarks/upload/client.py SETTINGS.json
"""

import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from deploy import lock  # noqa: E402
from deploy.remote import Remote  # noqa: E402
from deploy.settings import settings_from_mapping  # noqa: E402


def main(path: str) -> None:
    started = time.perf_counter()
    settings = settings_from_mapping(json.loads(Path(path).read_text()))
    with Remote(settings) as remote:
        # As in the pipeline: the lock shell opens the connection now; import, send the probe
        # and hash the output while it connects (an upload-only process need not import the
        # upload's modules before that).
        deploy_lock = lock.DeployLock(remote, settings)
        from deploy import upload

        local = upload.start_scan(settings)
        deploy_lock.queue_probe(upload.probe_script(settings))
        with deploy_lock as held:
            staged = upload.deliver(deploy_lock, settings, local.result())
            if not staged.skipped:
                upload.activate(deploy_lock, settings, staged.release_id, prune=True)
        print(staged.summary(), file=sys.stderr)
    # What the upload adds inside `fab deploy`, which has started Python and imported everything
    # anyway: from the SSH connection to the lock's release.
    print(f"in-process {time.perf_counter() - started:.3f}", file=sys.stderr)
    gc.freeze()  # as `fab`'s tasks do before exiting (deploy/tasks.py)


if __name__ == "__main__":
    main(sys.argv[1])
