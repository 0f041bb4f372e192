"""How long a frozen deploy keeps the deploy lock, per sshd ClientAlive setting.  One command (as root):

    ./run bench lock                 # about 12 minutes of wall time, nearly all of it waiting
    ./run bench lock --runs 1        # one run of every setting
    ./run bench lock --off 300       # also ClientAliveInterval 0 (sshd's own default), waiting at most 300 s
    ./run bench lock --settings 5:2 --runs 1   # one setting (ClientAliveInterval:ClientAliveCountMax), quick

The lock (deploy/lock.py, deploy/scripts/lock.sh) is a `flock` held by one SSH session for as long
as that session lives. A killed deploy frees it at once: the kernel closes the killed process's
socket, sshd sees the connection end and ends the session. A *frozen* deploy (SIGSTOP, a laptop
suspended, a debugger, a runner's VM paused) keeps the TCP connection open and its kernel keeps
acknowledging, so only sshd's own ClientAliveInterval/ClientAliveCountMax probes notice it.
TCPKeepAlive does not either: the frozen client's kernel answers TCP keepalives.

Our client's own keepalive (deploy/connection.py, KEEPALIVE = 15 s, paramiko's set_keepalive) does
not help here: it is sent by the client process, and a frozen process sends nothing.

For each setting, the sandbox's host 0 sshd_config gets `ClientAliveInterval N` and
`ClientAliveCountMax M` (checked with `sshd -T`) and sshd is restarted. Then, per run:

  1. a child Python process connects (connect_all) and holds the lock (lock.hold), and says so;
  2. this process connects too (not timed), then the child is frozen with SIGSTOP (time 0);
  3. this process takes the lock with the same API (DEPLOY_LOCK_TIMEOUT 600): the time from
     SIGSTOP to "LOCKED" is how long the frozen deploy kept everyone else out;
  4. the child, which must still be there (stopped), is SIGKILLed; sshd's log (LogLevel VERBOSE)
     shows how its session ended: "Timeout, client not responding" when sshd's probes freed the lock.

The baseline is the same with SIGKILL instead of SIGSTOP at time 0.

The child is frozen right after it took the lock (its last packet to sshd): the figure is the time
from the client's last packet. In a real frozen deploy the last packet can be up to KEEPALIVE (15 s)
before the freeze, so the lock is held up to 15 s less than measured here, never more.

What to expect (OpenSSH 9.2, Debian 12's; measured here, and it is what its server loop does):
the lock is held up to 2 x N x (M + 1) seconds, and nearly always exactly that. sshd waits N s for
client data, then probes only if `now > last + N` in whole seconds, which usually fails the first
time: it probes every 2N s, not every N, and ends the session at the check after M unanswered
probes. So 30/3 holds it 240 s, 5/2 30 s. (A check can fire after N s when the wait ends just past
a second boundary: one run of 10/2 in six gave 50 s instead of 60.)

Nothing here is asserted; the figures go into the README. Settings with an interval of 15 s or
more are run --long-runs times (default once: each run lasts minutes); the others --runs times.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from deploy import lock  # noqa: E402
from deploy.connection import connect_all  # noqa: E402
from deploy.errors import LockError  # noqa: E402
from deploy.sandbox import SSHD, start_sandbox, stop_sandbox  # noqa: E402
from deploy.settings import settings_from_mapping  # noqa: E402

SITE = "lockbench"
SETTINGS = [(30, 3), (15, 3), (10, 2), (5, 2)]  # (ClientAliveInterval, ClientAliveCountMax); the sandbox's default is 30 (and sshd's CountMax 3)
LONG = 15  # settings with an interval of at least this many seconds are run --long-runs times (each run lasts minutes)
TAKER_TIMEOUT = 600
SSHD_TIMEOUT_LINE = "Timeout, client not responding"
SSHD_ROUTINE = ("Connection from", "Accepted", "User child", "Starting session", "Transferred", "Closing connection")  # not how a session ended


def hold_forever(values_file: str) -> None:
    """The child: connect, hold the lock, say HELD, then sleep until stopped or killed."""
    settings = settings_from_mapping(json.loads(Path(values_file).read_text()))
    servers = connect_all(settings)
    port = next(iter(servers)).client.get_transport().sock.getsockname()[1]  # names its session in sshd's log
    with lock.hold(servers, settings, lambda host, holder: None):
        print(f"HELD {port}", flush=True)
        time.sleep(3600)


def configure_sshd(host, interval: int, count_max: int) -> None:
    """Rewrite host 0's ClientAlive lines, restart its sshd, and check what sshd itself reads.
    LogLevel VERBOSE: sshd then logs how each session ended (not only client-alive timeouts)."""
    path = host.sshd_dir / "sshd_config"
    lines = [line for line in path.read_text().splitlines()
             if line.strip() and not line.startswith(("ClientAliveInterval", "ClientAliveCountMax", "LogLevel"))]
    lines += [f"ClientAliveInterval {interval}", f"ClientAliveCountMax {count_max}", "LogLevel VERBOSE"]
    path.write_text("\n".join(lines) + "\n")
    host.stop_sshd()
    host.start_sshd()
    effective = subprocess.run([SSHD, "-T", "-f", str(path)], capture_output=True, text=True, check=True).stdout
    got = {k: v for k, _, v in (line.partition(" ") for line in effective.splitlines()) if k.startswith("clientalive")}
    if got != {"clientaliveinterval": str(interval), "clientalivecountmax": str(count_max)}:
        raise SystemExit(f"sshd -T reads {got}, expected ClientAliveInterval {interval} ClientAliveCountMax {count_max}")


def start_holder(values_file: Path) -> tuple[subprocess.Popen, int]:
    # A session of its own: a stopped process in a process group that becomes orphaned (the shell
    # that started `./run bench lock` exits, say) gets SIGHUP and SIGCONT from the kernel and dies,
    # which frees the lock at once and measures nothing. (Seen: 18 s and 48 s "held" before this.)
    child = subprocess.Popen([sys.executable, __file__, "--hold", str(values_file)], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    ready, _, _ = select.select([child.stdout], [], [], 30)
    line = child.stdout.readline() if ready else ""
    word, _, port = line.strip().partition(" ")
    if word != "HELD":
        child.kill()
        child.wait()
        raise SystemExit(f"the child did not take the lock within 30 s (said {line!r})")
    return child, int(port)


def one_run(values_file: Path, taker, how: int, sshd_log: Path, cap: int) -> tuple[float | None, bool, str]:
    """(seconds from `how` (SIGSTOP/SIGKILL) to our LOCKED, or None at the cap; whether we saw WAIT;
    what sshd logged about the end of the holder's session)."""
    log_start = sshd_log.stat().st_size if sshd_log.exists() else 0
    child, port = start_holder(values_file)
    settings = taker._replace(lock_timeout=cap)
    servers = connect_all(settings)
    waits = []
    try:
        start = time.monotonic()
        os.kill(child.pid, how)
        try:
            with lock.hold(servers, settings, lambda host, holder: waits.append(holder)):
                held = time.monotonic() - start
        except LockError:
            held = None
    finally:
        servers.close()
        died_before = child.poll()  # None: still there (stopped), as it must be until we kill it
        if died_before is None:
            child.kill()  # a stopped process dies of SIGKILL too
            child.wait()
    if how == signal.SIGSTOP and died_before is not None:
        raise SystemExit(f"the frozen child ended by itself (status {died_before}) before sshd gave up on it: no measurement")
    time.sleep(0.2)  # sshd writes its lines about the killed child's session
    with open(sshd_log, errors="replace") as f:
        f.seek(log_start)
        lines = [line.strip() for line in f if f"port {port}" in line and not line.startswith(SSHD_ROUTINE)]
    timeout = [line for line in lines if SSHD_TIMEOUT_LINE in line]
    ended = (timeout or lines or ["(nothing logged)"])[0]
    return held, bool(waits), ended


def measure(label: str, runs: int, values_file: Path, taker, how: int, sshd_log: Path, cap: int = TAKER_TIMEOUT) -> dict:
    samples = []
    for i in range(runs):
        held, waited, ended = one_run(values_file, taker, how, sshd_log, cap)
        shown = f"{held:6.1f} s" if held is not None else f"> {cap} s (still held; gave up)"
        print(f"  {label:<44} run {i + 1}/{runs}: lock held {shown}; taker waited: {'yes' if waited else 'no'}; "
              f"sshd: {ended}", flush=True)
        samples.append(held)
    return {"label": label, "samples": samples, "cap": cap}


def row(result: dict) -> str:
    samples = result["samples"]
    if any(s is None for s in samples):
        figure = f"> {result['cap']} (taker gave up)"
    elif len(samples) == 1:
        figure = f"{samples[0]:.1f}"
    else:
        figure = f"{statistics.median(samples):.1f} (min {min(samples):.1f}, max {max(samples):.1f})"
    return f"| {result['label']:<44} | {figure:<32} | {len(samples):>4} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of the baseline and of each setting with an interval under 15 s (default 3)")
    parser.add_argument("--long-runs", type=int, default=1, help="runs of each setting with an interval of 15 s or more (default 1)")
    parser.add_argument("--settings", nargs="+", metavar="INTERVAL:COUNTMAX", default=[f"{i}:{c}" for i, c in SETTINGS],
                        help="the sshd settings to compare (default: " + " ".join(f"{i}:{c}" for i, c in SETTINGS) + ")")
    parser.add_argument("--off", type=int, default=0, metavar="SECONDS",
                        help="also measure ClientAliveInterval 0 (sshd's default), waiting at most SECONDS (default: skip)")
    parser.add_argument("--hold", help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args()
    if args.hold:
        hold_forever(args.hold)
        return
    chosen = [tuple(int(n) for n in pair.split(":")) for pair in args.settings]

    sb = start_sandbox()
    try:
        values = sb.add_site(SITE) | {"SITEURL": f"https://{SITE}.example"}
        values_file = sb.root / f"{SITE}.json"
        values_file.write_text(json.dumps(values))
        taker = settings_from_mapping(values)
        host = sb.hosts[0]
        sshd_log = host.sshd_dir / "sshd.log"
        print(f"sandbox sshd: {subprocess.run([SSHD, '-V'], capture_output=True, text=True).stderr.strip()}", flush=True)

        results = []
        configure_sshd(host, *SETTINGS[0])
        results.append(measure("baseline: child SIGKILLed", args.runs, values_file, taker, signal.SIGKILL, sshd_log))
        for interval, count_max in chosen:
            configure_sshd(host, interval, count_max)
            runs = args.long_runs if interval >= LONG else args.runs
            label = f"SIGSTOP, ClientAliveInterval {interval}, CountMax {count_max}"
            results.append(measure(label, runs, values_file, taker, signal.SIGSTOP, sshd_log))
        if args.off:
            configure_sshd(host, 0, 3)
            results.append(measure("SIGSTOP, ClientAliveInterval 0 (off)", 1, values_file, taker, signal.SIGSTOP, sshd_log, args.off))

        print("\nSeconds the deploy lock stayed held after the holding client was killed / frozen "
              f"(from the client's last packet; sshd {sb.hosts[0].ssh_target}; {args.long_runs} run(s) per interval >= {LONG} s, "
              f"{args.runs} per other):")
        print(f"| {'holder, sshd setting':<44} | {'lock held, s (median of runs)':<32} | runs |")
        print(f"|{'-' * 46}|{'-' * 34}|------|")
        for result in results:
            print(row(result))
    finally:
        stop_sandbox(sb)


if __name__ == "__main__":
    main()
