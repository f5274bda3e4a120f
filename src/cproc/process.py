"""Process-level helpers. The Process class itself arrives with the Process issue;
until then current_process() reports the multiprocessing view of this process."""

import os
import multiprocessing.process as _mp_process

__all__ = ["current_process", "parent_process", "active_children"]

current_process = _mp_process.current_process
parent_process = _mp_process.parent_process
active_children = _mp_process.active_children


def _current_pid():
    return os.getpid()
