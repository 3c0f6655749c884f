"""The workdir lock's rules, in-process with short intervals. The real thing (a second
`scaled_ql.pretrain` refused, a rerun after kill -9): faults_test.py."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from scaled_ql import workdir_lock

FAST = dict(heartbeat_interval_s=0.05, stale_after_s=60.0, settle_s=0.01)


def forge(workdir, **fields) -> dict:
  """Writes another process's lock (by default: live, on another host)."""
  record = dict(host="other-host", pid=4242, pid_start=None, started="2025-01-01T00:00:00+00:00",
                heartbeat=time.time(), token="theirs")  # fmt: skip
  record.update(fields)
  (workdir / "LOCK").write_text(json.dumps(record))
  return record


def read_lock(workdir) -> dict:
  return json.loads((workdir / "LOCK").read_text())


def test_a_live_holder_is_named_and_its_lock_kept(tmp_path):
  theirs = forge(tmp_path)
  with pytest.raises(workdir_lock.WorkdirInUseError) as refused:
    with workdir_lock.hold(tmp_path, **FAST):
      pass
  assert re.match(
    rf"The workdir {re.escape(str(tmp_path))} is in use by another run \(process 4242 on other-host, since "
    r"2025-01-01T00:00:00\+00:00, last heartbeat \d+ s ago\)\.",
    str(refused.value),
  ), str(refused.value)
  assert read_lock(tmp_path) == theirs
  # On this host: a running process that is the one that took the lock.
  parent = os.getppid()
  forge(
    tmp_path, host=socket.gethostname(), pid=parent, pid_start=workdir_lock._process_start(parent)
  )
  with pytest.raises(workdir_lock.WorkdirInUseError, match=f"process {parent} on"):
    with workdir_lock.hold(tmp_path, **FAST):
      pass


def test_a_silent_holder_is_taken_over_and_the_new_lock_beats_until_released(tmp_path):
  forge(tmp_path, heartbeat=time.time() - 61)  # Its host died a minute ago.
  with workdir_lock.hold(tmp_path, **FAST):
    mine = read_lock(tmp_path)
    assert (mine["host"], mine["pid"]) == (socket.gethostname(), os.getpid())
    time.sleep(0.3)
    assert read_lock(tmp_path)["heartbeat"] > mine["heartbeat"]
  assert not (tmp_path / "LOCK").exists()


def test_a_dead_or_reused_pid_on_this_host_is_taken_over_at_once(tmp_path):
  ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                         capture_output=True, text=True, check=True)  # fmt: skip
  # A process that has exited; a running one that started after the lock's holder did (its
  # pid given anew, e.g. in a restarted container).
  for pid, pid_start in ((int(ended.stdout), None), (os.getppid(), "1")):
    forge(tmp_path, host=socket.gethostname(), pid=pid, pid_start=pid_start)
    with workdir_lock.hold(tmp_path, **FAST):
      assert read_lock(tmp_path)["pid"] == os.getpid()


def test_an_unreadable_lock_holds_until_it_is_old(tmp_path):
  (tmp_path / "LOCK").write_text("")  # Just created by a process about to write it.
  with pytest.raises(workdir_lock.WorkdirInUseError, match="LOCK is being written by another"):
    with workdir_lock.hold(tmp_path, **FAST):
      pass
  old = time.time() - 61
  os.utime(tmp_path / "LOCK", (old, old))
  with workdir_lock.hold(tmp_path, **FAST):
    assert read_lock(tmp_path)["pid"] == os.getpid()


def test_a_lock_taken_over_meanwhile_is_not_released(tmp_path):
  with workdir_lock.hold(tmp_path, **FAST):
    theirs = forge(tmp_path)  # As if this process had stalled for longer than stale_after_s.
    time.sleep(0.3)  # The heartbeat sees it and leaves it alone.
  assert read_lock(tmp_path) == theirs
