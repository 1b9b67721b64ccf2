# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
One run at a time in an output directory: the run's main process holds `OUTPUT_DIR/.supmae.lock` (its process id,
host, start time and a token of its own) from before it writes anything until it ends, also when it ends with an
error. A second run finds the lock and stops, naming the process that holds it.

A lock is stale, and taken over with a warning, when its holder is gone:
- on the same host, when no live process has its id;
- on any host, when the lock was not refreshed for `STALE_AFTER_SECONDS` (10 minutes). The holder refreshes the
  file's modification time every `HEARTBEAT_SECONDS` (1 minute) from a background thread, so the lock of a live run
  never gets that old; a run paused for longer (Ctrl-Z, a suspended machine) loses it.
"""

import contextlib
import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid


logger = logging.getLogger(__name__)


LOCK_FILE = ".supmae.lock"
HEARTBEAT_SECONDS = 60  # how often the holder refreshes its lock's modification time
STALE_AFTER_SECONDS = 600  # a lock not refreshed for this long has lost its holder, whichever host it is on


def read_lock(path: str) -> tuple[dict | None, float | None]:
    """The lock's content (an empty dict when it cannot be parsed: being written, or damaged) and its age in seconds
    since it was last refreshed; (None, None) when there is no lock."""
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return None, None
    try:
        with open(path) as file:
            content = json.load(file)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError):
        return {}, age
    return (content if isinstance(content, dict) else {}), age


def process_alive(pid: int) -> bool:
    """Whether a process with id `pid` runs on this host (a zombie, dead but not yet reaped, does not count)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    with contextlib.suppress(OSError, IndexError):
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()[0] != "Z"
    return True


def stale_reason(holder: dict, age: float | None) -> str | None:
    """Why the lock of `holder`, last refreshed `age` seconds ago, has no live holder; None when it may have one."""
    if age is not None and age > STALE_AFTER_SECONDS:
        return (
            f"it was last refreshed {age / 60:.0f} minutes ago, and a live run refreshes it every "
            f"{HEARTBEAT_SECONDS} seconds"
        )
    if holder.get("host") == socket.gethostname() and not process_alive(holder.get("pid")):
        return f"no process {holder.get('pid')} runs on this host ({holder.get('host')})"
    return None


def describe(holder: dict) -> str:
    """`process 123 on host-a (since 2026-12-02 10:00:00)`, as far as the lock says."""
    if not holder:
        return "a run whose lock file is being written or is damaged"
    since = f" (since {holder['started']})" if holder.get("started") else ""
    return f"process {holder.get('pid')} on {holder.get('host')}{since}"


class OutputDirLock:
    """The lock of one output directory (`acquire`, then `release`; or `with OutputDirLock(d):`)."""

    def __init__(self, output_dir: str):
        self.output_dir, self.path = output_dir, os.path.join(output_dir, LOCK_FILE)
        self.holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(sep=" ", timespec="seconds"),
            "token": uuid.uuid4().hex,
        }
        self._stop, self._heartbeat = threading.Event(), None

    def __enter__(self) -> "OutputDirLock":
        return self.acquire()

    def __exit__(self, *exception) -> None:
        self.release()

    def acquire(self) -> "OutputDirLock":
        """Create the output directory if needed and take its lock: atomically (O_EXCL), so that of two runs started
        together exactly one gets it. A stale lock is taken over with a warning; a live one is a FileExistsError
        naming its holder and the lock file."""
        try:
            os.makedirs(self.output_dir, exist_ok=True)
        except OSError as error:
            raise self._not_writable(error) from error
        for _ in range(3):  # a stale lock that another run took over in between is looked at again
            if self._create():
                self._heartbeat = threading.Thread(target=self._refresh, name="supmae-lock", daemon=True)
                self._heartbeat.start()
                return self
            holder, age = read_lock(self.path)
            if holder is None:  # released in between
                continue
            reason = stale_reason(holder, age)
            if reason is None:
                raise FileExistsError(
                    f"--output_dir {self.output_dir} is in use by another run: {describe(holder)} holds its lock "
                    f"file {self.path}. Wait for that run to end, or choose another --output_dir. If no such run is "
                    "alive (a run on another host that died leaves its lock, which is taken over once it is "
                    f"{STALE_AFTER_SECONDS // 60} minutes old), remove {self.path}."
                )
            logger.warning(f"Taking over the stale lock {self.path} of {describe(holder)}: {reason}.")
            self._remove_stale(holder)
        raise FileExistsError(
            f"--output_dir {self.output_dir}: other runs keep taking its lock file {self.path}; start one run at a "
            "time in a directory."
        )

    def release(self) -> None:
        """Stop refreshing the lock and remove it, if it is still this run's (a lock taken over as stale is not)."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
            holder, _ = read_lock(self.path)
            if holder and holder.get("token") == self.holder["token"]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)

    def _create(self) -> bool:
        """Create the lock file with this run's holder record; False when one exists."""
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as error:
            raise self._not_writable(error) from error
        with os.fdopen(descriptor, "w") as file:
            json.dump(self.holder, file)
            file.flush()
            os.fsync(file.fileno())
        return True

    def _remove_stale(self, holder: dict) -> None:
        """Move the stale lock of `holder` out of the way. The move is atomic; a lock found there that is not the one
        judged stale (another run took the stale one over in between) is put back."""
        aside = f"{self.path}.stale-{self.holder['token']}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        moved, _ = read_lock(aside)
        if moved is not None and moved.get("token") != holder.get("token"):
            with contextlib.suppress(OSError):
                os.link(aside, self.path)  # fails if yet another run made a lock meanwhile: theirs stays
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)

    def _refresh(self) -> None:
        """The heartbeat: the lock's modification time, renewed every HEARTBEAT_SECONDS until `release`."""
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                logger.warning(f"The lock file {self.path} was removed: another run may now start in this directory.")
                return
            except OSError:
                pass  # a passing file-system hiccup; the next beat tries again

    def _not_writable(self, error: OSError) -> OSError:
        return OSError(
            error.errno,
            f"--output_dir {self.output_dir} is not writable ({error.strerror or error}); checkpoints and the "
            "trained model are written there. Choose another directory.",
        )
