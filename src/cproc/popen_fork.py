"""The fork start method: the child is forked in C (csrc/process.c)."""

# Imported at the first start, as multiprocessing's Popen modules do: it
# registers the exit handler that joins non-daemonic children and terminates
# daemonic ones (and so runs before atexit handlers registered earlier).
from multiprocessing import util as _mp_util  # noqa: F401

from . import _cproc

__all__ = ["Popen"]


class Popen(_cproc.Popen):
    method = "fork"

    def __init__(self, process_obj):
        self._launch_fork(process_obj)

    def duplicate_for_child(self, fd):
        return fd
