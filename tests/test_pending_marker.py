"""The write-pending marker counts only while a live writer holds it: a killed writer's
marker, or one naming a PID another process has taken (PID 1 in a container), never
makes a server step aside (headgraph/schema/pending.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from headgraph.schema.pending import PendingMarker, pending_marker, process_start, writer_waiting

HOLD = ("import sys, time; from pathlib import Path; "
        "from headgraph.schema.pending import PendingMarker; "
        "m = PendingMarker(Path(sys.argv[1])); assert m.take(); print('held', flush=True); "
        "time.sleep(60)")


def test_a_held_marker_counts_and_its_release_removes_it(tmp_path: Path):
    db = tmp_path / "g.duckdb"
    marker = PendingMarker(db)
    assert not writer_waiting(db)
    assert marker.take() and writer_waiting(db)
    pid, started = pending_marker(db).read_text().split()
    assert int(pid) == os.getpid() and started == process_start(os.getpid())
    assert not PendingMarker(db).take()  # one writer's marker speaks for a second
    marker.release()
    assert not writer_waiting(db) and not pending_marker(db).exists()


def test_a_killed_writers_marker_and_a_bare_pid_never_count(tmp_path: Path):
    db = tmp_path / "g.duckdb"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert writer_waiting(db)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert pending_marker(db).exists() and not writer_waiting(db)  # left behind, inert
    for pid in ("1", str(os.getpid())):  # alive, but nobody holds the marker
        pending_marker(db).write_text(f"{pid} {process_start(int(pid))}\n")
        assert not writer_waiting(db)
    again = PendingMarker(db)  # the next writer takes the leftover file over
    assert again.take() and writer_waiting(db)
    again.release()
    assert not pending_marker(db).exists()
