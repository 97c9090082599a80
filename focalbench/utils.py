"""Two small OS helpers every layer uses: an atomic file write and SIGTERM delivered as Ctrl-C.

Imports nothing of focalbench, so any module may use it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp) on a temporary file next to path, then rename it over path.

    A reader (or a kill at any instant) sees the old file or the new one, never half of one; when
    write raises, or Ctrl-C arrives mid-write, the old file stays and the temporary one is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, fsync: bool = False) -> None:
    """atomic_write of a text; fsync=True also flushes it to disk before the rename (for records
    that must survive a power cut, such as a run's row)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())

    atomic_write(path, write)


def _interrupt(signum, frame):
    # one orderly stop: later SIGTERMs are ignored until the handler is restored, so that a repeat
    # cannot cut the clean-up of this one short. Repeats happen: a dying sweep sends its jobs
    # PR_SET_PDEATHSIG once for each of its threads.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt, so `kill PID`, a sweep stopping its jobs
    or a batch system's preemption end the work as Ctrl-C does. The previous handler is restored on
    exit. Outside the main thread (where Python allows no handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
