"""The server-side deploy lock: one deploy (or rollback, or renewal) at a time per site.

A remote ``flock`` on ``<state_dir>/deploy.lock`` is held for the whole deploy (upload,
certificate, nginx, switch) by a shell that is the first command of the deploy's OpenSSH
connection (``deploy.remote``). The shell waits on its stdin: when the deploy ends, the client
closes it; when the client is killed or the connection drops, ssh/sshd close it. Either way the
shell exits and the kernel releases the lock: no stale lock files, no PID guessing. (A network
that vanishes without a FIN/RST holds the lock until sshd notices: ServerAliveInterval on our
side, ClientAliveInterval on the server's.)

Before releasing, the shell also waits for the deploy's background work (which holds a shared
lock on ``deploy.lock.busy``): the hard-linked copy for the next upload, the deletion of pruned
releases. The next deploy must not start under their feet.

Who holds the lock (host, PID, user, start time, release) is written beside it
(``deploy.lock.holder``), so a second deploy that waits in vain can say whom it waited for.
The lock shell also runs a caller's probe script right after locking, saving a round trip
(the upload reads the live release's manifest that way), and later runs scripts sent on its
stdin, with their input if they have one (``DeployLock.run``: the upload, the switch of
``current``), saving an SSH session each (~20-30 ms).
"""

from __future__ import annotations

import os
import re
import shlex
import threading
import time
from typing import Callable, NamedTuple

from .errors import ConnectionFailed, LockError, RemoteCommandFailed
from .remote import Remote
from .settings import DeploySettings

# This module and those it imports are loaded before the deploy's SSH connection starts: they
# stay light (no dataclasses, datetime, getpass, tempfile: ~20 ms of imports on the critical path).

TIMEOUT_EXIT = 75  # EX_TEMPFAIL
Body = Callable[[Callable[[bytes], None]], None]  # writes a script's input through the callable it is given
FRAME = 1 << 20  # bytes of a script's input per frame (``DeployLock.run`` with a body)
ABANDON_GRACE = 5  # seconds the lock shell gets to wind down after an upload given up mid-way


class Held(NamedTuple):
    probe_output: bytes  # stdout of the probe script, run while holding the lock
    waited: float  # seconds spent waiting for another deploy
    holder: str


def holder_info(release_id: str = "", now=None) -> str:
    """One printable line naming this deploy (it ends up in a file on the server and in messages);
    ``now``, a datetime, for tests."""
    since = f"{now:%Y-%m-%dT%H:%M:%SZ}" if now else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = (f"host={os.uname().nodename} pid={os.getpid()} user={_user_name()} "
            f"since={since}" + (f" release={release_id}" if release_id else ""))
    return re.sub(r"[^\x21-\x7e ]", "?", text)[:300]


def _user_name() -> str:
    """The local user, as ``getpass.getuser`` finds it (the environment, then the password database)."""
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


def lock_script(settings: DeploySettings, holder: str, timeout: int) -> str:
    """The remote shell that takes the lock, runs the scripts it is sent (the probe first), then
    holds the lock until stdin closes. Pure."""
    q = shlex.quote
    lock = str(settings.lock_file)
    holder_file, busy = lock + ".holder", lock + ".busy"
    input_end = lock + ".input-end"
    return "\n".join([
        "set -u",
        f"exec 9>>{q(lock)} || exit 1",
        "if ! flock -n 9; then",
        f"  printf 'WAIT %s\\n' \"$(head -c 300 {q(holder_file)} 2>/dev/null | tr -d '\\n')\"",
        f"  if ! flock -w {int(timeout)} 9; then",
        f"    printf 'TIMEOUT %s\\n' \"$(head -c 300 {q(holder_file)} 2>/dev/null | tr -d '\\n')\"",
        f"    exit {TIMEOUT_EXIT}",
        "  fi",
        "fi",
        f"printf '%s\\n' {q(holder)} > {q(holder_file)}",  # (one short write: readers see all or nothing)
        "echo LOCKED",
        # Scripts to run under the lock without a new SSH session (``DeployLock.run``; the probe):
        # "RUN <lines> <nonce>", then the script. It runs only once every line has arrived (a
        # script cut short by a dead client never runs); its output ends with "<nonce> <status>".
        # Builtins only: dash's `read` takes a pipe byte by byte, never past the script. A script
        # runs in a subshell of this one (a fork, no new `sh` to start), with `set -u` off as in
        # a fresh shell.
        "while IFS=' ' read -r word lines nonce; do",
        '  case $word in RUN|SEND) ;; *) break;; esac',
        '  case $lines in ""|*[!0-9]*) break;; esac; case $nonce in ""|*[!0-9a-f]*) break;; esac',
        "  script=; complete=yes",
        '  while [ "$lines" -gt 0 ]; do IFS= read -r line || { complete=; break; }; script="$script$line',
        '"; lines=$((lines - 1)); done',
        '  [ -n "$complete" ] || break',
        '  if [ "$word" = RUN ]; then ( set +u; eval "$script" ) < /dev/null 2>&1; printf "\\n%s %s\\n" "$nonce" "$?"; continue; fi',
        # "SEND": the script's input follows in frames, "<size>\n" and that many bytes, until
        # "0\n" (the upload). Its stderr is kept apart (stdout may be binary; through a pipe, not
        # a file: a full disk must not swallow the reason) and shown after stdout on failure.
        # Whatever the script reads, the rest is drained, so every frame is read and this shell
        # stays in step with the client; if the frames did not end (the client died, or gave up
        # mid-way), nothing after them is taken as a command. (A script sent this way must not
        # leave background jobs behind: they would hold its stderr open.)
        f'  {{ while IFS= read -r size; do case $size in ""|*[!0-9]*) exit 1;; esac; '
        f'[ "$size" -gt 0 ] || {{ printf %s "$nonce" > {q(input_end)}; exit 0; }}; head -c "$size" || exit 1; done; exit 1; }} '
        '| ( exec 3>&1; errors=$( ( set +u; eval "$script" ) 2>&1 >&3 3>&- ); status=$?; '
        'if [ "$status" -ne 0 ]; then cat > /dev/null; printf "%.2000s\\n" "$errors"; '
        'elif IFS= read -r rest || [ -n "$rest" ]; then cat > /dev/null; fi; exit "$status" )',
        "  status=$?; ended=",
        f"  [ ! -f {q(input_end)} ] || read -r ended < {q(input_end)} || true",
        '  if [ "$ended" != "$nonce" ]; then',
        "    echo 'its input ended before its last frame (or the state folder is not writable: is the disk full?)'",
        '    [ "$status" -ne 0 ] || status=70',
        '    printf "\\n%s %s\\n" "$nonce" "$status"; break',
        "  fi",
        '  printf "\\n%s %s\\n" "$nonce" "$status"',
        "done",
        # Hold the lock until the client closes the channel (or dies: sshd closes it then).
        "cat > /dev/null",
        # Let a dead client's workers finish before the next deploy may start.
        f"exec 7>>{q(busy)} && flock -x 7",
        f"rm -f {q(holder_file)}",
        "exit 0",
    ])


class DeployLock:
    """The deploy lock. Creating it starts the lock shell at once (it opens ``remote``'s
    connection), so the SSH handshake runs while the caller does other work; ``wait()`` (or
    ``with``) blocks until the lock is held; ``release()`` ends the lock shell."""

    def __init__(self, remote: Remote, settings: DeploySettings, *, release_id: str = "", probe_script: str = "",
                 on_wait: Callable[[str], None] | None = None):
        self.remote, self.settings, self.on_wait = remote, settings, on_wait
        self.holder = holder_info(release_id)
        self.started = time.monotonic()
        self.proc = remote.start_master(lock_script(settings, self.holder, settings.lock_timeout))
        self.reader = _Reader(self.proc.stdout)
        self.held: Held | None = None
        self._probe: str | None = None
        if probe_script:
            self.queue_probe(probe_script)

    def queue_probe(self, script: str) -> None:
        """Send the probe now (before ``wait()``): the lock shell runs it as soon as it holds the
        lock, and ``wait()`` returns its output as ``Held.probe_output``."""
        if self.held is not None or self._probe is not None:
            raise LockError("the probe must be sent once, before the lock is held")
        self._probe = self._send(script)

    def wait(self) -> Held:
        if self.held is None:
            try:
                self.held = self._read_answer()
            except BaseException:
                self.release()
                raise
        return self.held

    def _read_answer(self) -> Held:
        settings, remote = self.settings, self.remote
        reader = self.reader
        while True:
            line = reader.line()
            if line is None:
                status = self.proc.wait()
                message = self.proc.stderr.read().decode("utf-8", "replace").strip()
                if status == 255:
                    raise ConnectionFailed(f"SSH to {remote.where} failed: {message or 'no message'}. Check DEPLOY_HOST, DEPLOY_PORT, "
                                           f"DEPLOY_USER, DEPLOY_SSH_KEY and that the server's key is in DEPLOY_KNOWN_HOSTS ({settings.known_hosts}).")
                raise LockError(f"taking the deploy lock {settings.lock_file} failed on the server (exit {status}): "
                                f"{message or 'no message'}. Check that the one-time server set-up "
                                f"made {settings.state_dir} and that `flock` (util-linux) is installed.")
            word, _, rest = line.partition(" ")
            if word == "WAIT":
                if self.on_wait:
                    self.on_wait(rest or "unknown (no holder file)")
            elif word == "TIMEOUT":
                raise LockError(
                    f"another deploy holds the lock on {settings.host} ({rest or 'holder unknown'}); gave up after "
                    f"{settings.lock_timeout} s (DEPLOY_LOCK_TIMEOUT). Nothing was changed. Wait for it to finish, "
                    "then deploy again; a killed deploy releases the lock as soon as its SSH connection closes.")
            elif word == "LOCKED":
                probe = self._result(self._probe, "reading the server's release state") if self._probe else b""
                return Held(probe, time.monotonic() - self.started, self.holder)
            else:
                raise LockError(f"unexpected answer while taking the deploy lock: {line[:200]!r}")

    def run(self, script: str, what: str = "a command", body: Body | None = None,
            sent: Callable[[int], None] | None = None) -> bytes:
        """Run ``script`` in the lock shell: under the lock, without opening another SSH session.
        ``body``, if given, writes the script's input (``sent`` counts the bytes as they go);
        otherwise its input is empty and its stderr joins its stdout. Returns its output;
        raises if it fails."""
        self.wait()
        if self.proc.stdin is None or self.proc.stdin.closed:
            raise LockError("the deploy lock is not held any more")
        if body is None:
            return self._result(self._send(script), what)
        nonce = self._send(script, "SEND")
        # The answer is read while the input goes out: a script that writes before it has read
        # all of its input then never blocks on a full pipe, with this side still writing.
        answer: list = []
        reader = threading.Thread(target=lambda: answer.append(self._answer(nonce)), daemon=True)
        reader.start()
        try:
            self._send_input(body, sent)
        except BaseException:
            # Its input cut short, the script fails and the lock shell stops taking commands: the
            # deploy ends here. End the input, give the lock shell a moment to say so and tidy
            # up (its holder file), then release the lock.
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            reader.join(ABANDON_GRACE)
            self.release()
            raise
        reader.join()
        return self._checked(answer[0] if answer else None, what)

    def _send(self, script: str, word: str = "RUN") -> str:
        nonce = os.urandom(8).hex()
        try:
            self.proc.stdin.write(f"{word} {script.count(chr(10)) + 1} {nonce}\n{script}\n".encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # ssh has ended: reading its answer says why
        return nonce

    def _send_input(self, body: Body, sent: Callable[[int], None] | None) -> None:
        """``body``'s bytes in frames of up to ~FRAME bytes (the server starts one `head` per frame)."""
        stdin, frame = self.proc.stdin, bytearray()

        def flush() -> None:
            stdin.write(b"%d\n" % len(frame))
            stdin.write(frame)
            if sent:
                sent(len(frame))
            frame.clear()

        def write(chunk: bytes) -> None:
            frame.extend(chunk)
            if len(frame) >= FRAME:
                flush()
        try:
            body(write)
            if frame:
                flush()
            stdin.write(b"0\n")
            stdin.flush()
        except BrokenPipeError:
            pass  # ssh has ended: reading the answer says why

    def _answer(self, nonce: str) -> tuple[bytes, int] | None:
        """What a script printed and its status; None if the connection ended first."""
        try:
            return self.reader.until(f"\n{nonce} ".encode())
        except (OSError, ValueError):  # the stream was closed under us (``release``)
            return None

    def _result(self, nonce: str, what: str) -> bytes:
        return self._checked(self._answer(nonce), what)

    def _checked(self, out: tuple[bytes, int] | None, what: str) -> bytes:
        if out is None:
            raise ConnectionFailed(f"the SSH connection to {self.remote.where} closed while {what}")
        text, status = out
        if status != 0:
            raise RemoteCommandFailed(f"{what} failed on the server (exit {status}): {text.decode('utf-8', 'replace').strip()[:500]}")
        return text

    def release(self) -> None:
        # Closing the lock shell's stdin ends its `cat`: it waits for the deploy's background
        # work, removes the holder file and exits, which releases the lock (a moment later).
        self.remote.close()

    def __enter__(self) -> Held:
        return self.wait()

    def __exit__(self, *exc) -> None:
        self.release()


def hold(remote: Remote, settings: DeploySettings, **kwargs) -> DeployLock:
    """``with hold(remote, settings) as held:`` holds the deploy lock for the block."""
    return DeployLock(remote, settings, **kwargs)


class _Reader:
    """Buffered reads of a pipe: whole lines, or what comes before a marker."""

    def __init__(self, stream):
        self.stream = stream
        self.buf = bytearray()

    def _fill(self) -> bool:
        chunk = self.stream.read1(1 << 16)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def line(self) -> str | None:
        while b"\n" not in self.buf:
            if not self._fill():
                return None
        line, _, rest = bytes(self.buf).partition(b"\n")
        self.buf = bytearray(rest)
        return line.decode("utf-8", "replace")

    def until(self, marker: bytes) -> tuple[bytes, int] | None:
        """What comes before ``marker`` + "<status>\\n", and the status; None at the end of the stream."""
        while True:
            at = self.buf.find(marker)
            if at >= 0:
                end = self.buf.find(b"\n", at + len(marker))
                if end >= 0:
                    status = self.buf[at + len(marker):end].decode("ascii", "replace")
                    data, self.buf = bytes(self.buf[:at]), self.buf[end + 1:]
                    return data, int(status) if status.isdigit() else -1
            if not self._fill():
                return None
