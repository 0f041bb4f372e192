"""The upload alone, as `fab deploy` does it, as a process of its own (what the benchmark times).

The same calls, in the same order, as deploy/pipeline.py, minus the certificate, the nginx vhost
and the verification over https: hash the output while connecting, take the lock, read the
host's state (with the live release's manifest), send what it lacks as a new release
(``upload.send_release``), switch ``current`` to it (``releases.commit``), prune
(``releases.finish``), release the lock. With DEPLOY_SKIP_UNCHANGED (the default) and nothing
changed, it stops after reading the state, as the pipeline does.

    python benchmarks/upload/client.py SETTINGS.py

Prints ``in-process SECONDS`` on stderr: from the start of ``main`` (imports done) to the end,
and ``stages ...``: the time at which each step ended, from the same start.
"""

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from deploy import pipeline, releases, upload  # noqa: E402
from deploy.connection import connect_all  # noqa: E402
from deploy.settings import load_settings  # noqa: E402


def main(path: str) -> None:
    started = time.perf_counter()
    stages = []

    def done(stage: str) -> None:
        stages.append(f"{stage} {time.perf_counter() - started:.3f}")

    settings = load_settings(path)
    progress = pipeline.Progress()
    with ThreadPoolExecutor(max_workers=1) as pool:
        scanned = pool.submit(upload.scan, settings)  # hashing while SSH connects, as the pipeline does
        servers = connect_all(settings)
        done("connected")
        try:
            with pipeline.hold(servers, settings, progress):
                done("locked")
                states = pipeline.read_states(servers, settings, progress)
                done("state")
                local = scanned.result()
                done("scanned")
                if settings.skip_unchanged and upload.unchanged(local, list(states.values())):
                    print("nothing changed: no new release", file=sys.stderr)
                else:
                    release_id = upload.new_release_id(list(states.values()))
                    sent = servers.each_or_raise(
                        lambda s: upload.send_release(s, settings, states[s], local, release_id),
                        stage="uploading the release")
                    done("sent")
                    releases.commit(servers, settings, {s: releases.Change(release_id) for s in servers})
                    done("committed")
                    releases.finish(servers, settings, prune=True)
                    done("pruned")
                    for server, result in sent.items():
                        print(f"[{server}] {result.summary()}", file=sys.stderr)
        finally:
            servers.close()
    done("closed")
    print("stages " + ", ".join(stages), file=sys.stderr)
    print(f"in-process {time.perf_counter() - started:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
