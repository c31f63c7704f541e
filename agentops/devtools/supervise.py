"""Keep one Procfile process running, the way systemd's Restart=always or Kubernetes would in production.

    python -m agentops.devtools.supervise -- celery -A agentops.celery worker ...

honcho (make run) stops every process as soon as one exits, so a Celery worker that died (killed, out of
memory, a broker bug) would take the whole demo down with it. This starts the command again after a short,
growing pause (1 s doubling to 30 s; back to 1 s once it stayed up for a minute). SIGTERM and SIGHUP are
passed to the command, and then this exits with the command's code. SIGINT is not passed on: Ctrl-C reaches
the whole foreground process group already, and a second SIGINT would make Celery shut down cold.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

STABLE_SECONDS = 60.0
MAX_PAUSE = 30.0


def supervise(command: list[str]) -> int:
    stopping: list[int] = []
    child: subprocess.Popen | None = None

    def forward(signum, _frame):
        stopping.append(signum)
        if signum != signal.SIGINT and child is not None and child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    pause = 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command)
        code = child.wait()
        code = 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N
        if stopping:
            return code
        pause = 1.0 if time.monotonic() - started > STABLE_SECONDS else min(pause * 2, MAX_PAUSE)
        print(
            f"supervise: {command[0]} exited with {code}; starting it again in {pause:g} s",
            file=sys.stderr,
            flush=True,
        )
        deadline = time.monotonic() + pause
        while time.monotonic() < deadline and not stopping:
            time.sleep(0.1)
        if stopping:
            return code


def main(argv: list[str]) -> int:
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print("usage: python -m agentops.devtools.supervise -- <command> [args...]", file=sys.stderr)
        return 2
    return supervise(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
