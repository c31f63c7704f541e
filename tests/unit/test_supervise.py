"""The Procfile's process supervisor: a command that exits is started again; SIGTERM stops both."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.fixtures.waiting import wait_for


def test_a_process_that_exits_is_started_again_and_sigterm_stops_it(tmp_path):
    starts = tmp_path / "starts"
    # Each start appends a line; the first start exits at once (a crash), the second one stays up.
    script = (
        "import pathlib, sys, time\n"
        f"p = pathlib.Path({str(starts)!r})\n"
        "p.write_text(p.read_text() + 'x' if p.exists() else 'x')\n"
        "sys.exit(3) if len(p.read_text()) == 1 else time.sleep(60)\n"
    )
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "agentops.devtools.supervise", "--", sys.executable, "-c", script],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: starts.exists() and len(starts.read_text()) == 2,
            timeout=15,
            interval=0.05,
            message="the command to be started again",
        )
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(10)
    finally:
        supervisor.kill()
    assert code == 128 + signal.SIGTERM  # the command's own exit: it was terminated
    assert "exited with 3; starting it again in 2 s" in supervisor.stderr.read()
    assert len(starts.read_text()) == 2
