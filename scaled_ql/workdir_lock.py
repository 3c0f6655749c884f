"""One trainer per run directory: `{workdir}/LOCK`, held while a run trains, with a heartbeat.

A cluster that requeues a job whose first copy still runs would otherwise have two trainers
write one run's checkpoints and metrics. The lock is a file rather than `flock`, which does not
hold across the hosts of a shared filesystem and does not exist in a bucket:

    {"host": "vm-3", "pid": 4711, "pid_start": "123456", "started": "2025-11-30T19:08:27+00:00",
     "heartbeat": 1764529707.3, "token": "..."}

The holder rewrites it every `heartbeat_interval_s` (a daemon thread) and deletes it when it
stops. A new run takes over a stale lock: one whose process, on this host, is gone (killed with
-9, crashed: at once), or whose heartbeat is older than `stale_after_s` (a holder on another
host that died; the hosts' clocks must agree to well within that). Any other lock refuses the
new run, naming its holder.

The lock is created exclusively (`O_EXCL`) on a local or mounted filesystem. A stale lock, or one
in a bucket (which has no exclusive create), is claimed by writing it, waiting `settle_s`, and
reading it back: of processes that claim it together, the last writer holds it and the others
are refused.
"""

import contextlib
import datetime
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

from absl import logging
from etils import epath

from scaled_ql import runs

LOCK_FILE = "LOCK"
HEARTBEAT_INTERVAL_S = 30.0
STALE_AFTER_S = 300.0
SETTLE_S = 1.0


class WorkdirInUseError(ValueError):
  """Another live process holds the workdir's lock."""


@contextlib.contextmanager
def hold(
  workdir: runs.PathLike,
  *,
  heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
  stale_after_s: float = STALE_AFTER_S,
  settle_s: float = SETTLE_S,
) -> Iterator[None]:
  """Holds `{workdir}/LOCK` while the block runs.

  Args:
    workdir: the run directory (it must exist).
    heartbeat_interval_s: seconds between heartbeats.
    stale_after_s: a lock whose heartbeat is older than this is taken over.
    settle_s: seconds between claiming a stale (or bucket) lock and reading it back.

  Raises:
    WorkdirInUseError: another live process holds the lock; the message names it.
  """
  lock = _Lock(epath.Path(workdir) / LOCK_FILE, heartbeat_interval_s, stale_after_s, settle_s)
  lock.acquire()
  try:
    yield
  finally:
    lock.release()


class _Lock:
  """This process's claim on one lock file."""

  def __init__(self, path: epath.Path, heartbeat_interval_s, stale_after_s, settle_s):
    self.path = path
    self._interval_s, self._stale_after_s, self._settle_s = (
      heartbeat_interval_s, stale_after_s, settle_s,
    )  # fmt: skip
    self._record = dict(
      host=socket.gethostname(),
      pid=os.getpid(),
      pid_start=_process_start(os.getpid()),
      started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      heartbeat=time.time(),
      token=uuid.uuid4().hex,
    )
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._beat, name="workdir_lock", daemon=True)

  # -- Taking and giving back.

  def acquire(self) -> None:
    for _ in range(3):  # Another taker of a stale lock may win a round: then it holds it.
      holder = self._read()
      if holder is not None:
        stale = self._stale_reason(holder)
        if stale is None:
          raise WorkdirInUseError(self._describe(holder))
        logging.warning("Taking over %s: %s.", self.path, stale)
      if self._claim(replacing=holder is not None):
        self._thread.start()
        return
    raise WorkdirInUseError(f"{self.path}: other processes keep taking this run's lock; stop them "
                            "or pass another --workdir.")  # fmt: skip

  def release(self) -> None:
    """Stops the heartbeat and deletes the lock if it is still this process's."""
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join()
    try:
      if self._holds():
        self.path.unlink(missing_ok=True)
    except Exception as e:  # Releasing must not hide the error that may be stopping the run.
      logging.warning("Could not release %s (%s); the next run takes it over.", self.path, e)

  def _claim(self, replacing: bool) -> bool:
    """Writes this process's record as the lock; whether this process holds it then."""
    if not replacing and not runs.is_uri(self.path):
      try:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
      except FileExistsError:
        return False
      try:
        with os.fdopen(fd, "w") as f:
          f.write(json.dumps(self._record))
      except BaseException as e:
        self.path.unlink(missing_ok=True)  # An empty lock would hold off the next run.
        if isinstance(e, OSError):  # (A full disk's error names no file.)
          raise OSError(e.errno, e.strerror, os.fspath(self.path)) from e
        raise
      return True
    self._write()
    time.sleep(self._settle_s)  # A taker that read the same stale lock has written by now.
    return self._holds()

  def _write(self) -> None:
    """Replaces the lock with this process's record, atomically."""
    text = json.dumps(self._record)
    if runs.is_uri(self.path):  # An object appears whole when its upload completes.
      self.path.write_text(text)
      return
    tmp = self.path.with_name(f"{LOCK_FILE}.{self._record['token']}.tmp")
    tmp.write_text(text)
    tmp.replace(self.path)

  def _holds(self) -> bool:
    holder = self._read()
    return holder is not None and holder.get("token") == self._record["token"]

  # -- The heartbeat.

  def _beat(self) -> None:
    while not self._stop.wait(self._interval_s):
      try:
        if not self._holds():
          logging.error(
            "%s was taken over by another process (this one's heartbeat stopped for over %.0f "
            "s?): both now write to this run.", self.path, self._stale_after_s,
          )  # fmt: skip
          return
        self._record["heartbeat"] = time.time()
        self._write()
      except Exception as e:  # A filesystem or object-store hiccup: the next beat tries again.
        logging.warning("Could not refresh %s: %s", self.path, e)

  # -- Reading another holder's lock.

  def _read(self) -> dict | None:
    """The lock's record; None without a lock; {"mtime": ...} while it is unreadable."""
    try:
      text = self.path.read_text()
      with contextlib.suppress(json.JSONDecodeError):
        record = json.loads(text)
        if isinstance(record, dict) and isinstance(record.get("heartbeat"), (int, float)):
          return record
      return {"mtime": self.path.stat().mtime}  # Being written (or garbage): judged by its age.
    except FileNotFoundError:
      return None

  def _stale_reason(self, holder: dict) -> str | None:
    """Why `holder`'s lock may be taken over, or None if it is live."""
    if "heartbeat" not in holder:
      age_s = time.time() - holder["mtime"]
      return f"unreadable for {age_s:.0f} s" if age_s > self._stale_after_s else None
    age_s = time.time() - holder["heartbeat"]
    if age_s > self._stale_after_s:
      return f"the last heartbeat of {_name(holder)} was {age_s:.0f} s ago"
    if holder.get("host") == self._record["host"] and not _is_running(
      holder.get("pid"), holder.get("pid_start")
    ):
      return f"{_name(holder)} is no longer running"
    return None

  def _describe(self, holder: dict) -> str:
    workdir = self.path.parent
    if "heartbeat" not in holder:
      what = f"{self.path} is being written by another process"
    else:
      age_s = time.time() - holder["heartbeat"]
      what = f"{_name(holder)}, since {holder.get('started')}, last heartbeat {age_s:.0f} s ago"
    return (
      f"The workdir {workdir} is in use by another run ({what}). Stop that run, or pass "
      f"another --workdir. A lock whose process has died is taken over: at once on its host, "
      f"from another host after {self._stale_after_s:.0f} s without a heartbeat."
    )


def _name(holder: dict) -> str:
  return f"process {holder.get('pid')} on {holder.get('host')}"


def _process_start(pid: int) -> str | None:
  """When process `pid` of this host started (clock ticks since boot), where /proc tells."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      stat = f.read()
  except OSError:
    return None
  return stat[stat.rindex(")") + 2 :].split()[19]  # Field 22; the name, field 2, may hold " ".


def _is_running(pid, pid_start: str | None) -> bool:
  """Whether `pid` runs on this host and is the process that took the lock (not a later one
  given the same pid, e.g. in a restarted container)."""
  if not isinstance(pid, int) or pid <= 0:  # (kill(0) would signal this process group.)
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # Another user's process: it runs.
  start = _process_start(pid)
  return pid_start is None or start is None or start == pid_start
