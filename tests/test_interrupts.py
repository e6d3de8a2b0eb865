"""Ctrl-C on a plan or sweep with worker processes stops it: no worker left, no result folder."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.parametrize("command", [
    ["plan", str(ROOT / "scenarios" / "plan_chat_service.yaml")],
    ["sweep", str(ROOT / "scenarios" / "azure_conv_a100.yaml"), "--set", "deployment.replicas=1:8:1", "--seeds", "2"],
], ids=["plan", "sweep"])
def test_ctrl_c_stops_the_workers_and_writes_nothing(tmp_path, command):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "simulator.cli", *command, "--workers", "2", "--out", str(out)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
        workers = children(proc.pid)
        time.sleep(0.2)
    assert len(workers) >= 2, "the pool never started"
    time.sleep(1.0)  # the workers are simulating now
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)  # the whole run would take minutes
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the interrupted run did not stop") from None
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert not [pid for pid in workers if alive(pid)], "worker processes were left running"
    assert not out.exists()
