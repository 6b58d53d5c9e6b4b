"""Fault 1 of issue 18, second half: ``kill -9`` during extraction left a
``data/.features-*.partial-*`` folder that no later run removed.

Now the next writer of the same output removes a killed writer's partial folder
(its lock died with it) and keeps a live writer's, whose lock is still held.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from ctx_core.fsutil import atomic_output_dir
from tests.conftest import ROOT

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ctx_core.fsutil import atomic_output_dir
    with atomic_output_dir(Path(sys.argv[1]), force=True) as tmp:
        (tmp / "shard-0.npy").write_bytes(b"half a shard")
        print(tmp, flush=True)
        time.sleep(120)
""")


def _start_writer(out: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    partial = Path(proc.stdout.readline().strip())
    assert partial.is_dir() and partial.name.startswith(f".{out.name}.partial-{proc.pid}-"), partial
    return proc, partial


def test_the_next_run_removes_a_killed_writers_partial_folder_and_keeps_a_live_ones(tmp_path):
    out = tmp_path / "data" / "features-smoke"
    killed, stale = _start_writer(out)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert stale.is_dir()  # what kill -9 leaves
    legacy = out.parent / f".{out.name}.partial-k3x9_q1"  # named before folders carried a pid
    legacy.mkdir()
    live, running = _start_writer(out)
    try:
        with atomic_output_dir(out, force=True) as tmp:
            (tmp / "shard-0.npy").write_bytes(b"a whole shard")
        assert not stale.exists() and not legacy.exists()
        assert running.is_dir() and (running / "shard-0.npy").read_bytes() == b"half a shard"
        assert (out / "shard-0.npy").read_bytes() == b"a whole shard"
        leftovers = {p.name for p in out.parent.iterdir()} - {out.name, running.name}
        assert leftovers == set()
    finally:
        live.kill()
        live.wait()
