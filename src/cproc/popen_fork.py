"""The fork start method: the child is forked in C (csrc/process.c)."""

# Imported at the first start, as multiprocessing's Popen modules do: it
# registers the exit handler that joins non-daemonic children and terminates
# daemonic ones (and so runs before atexit handlers registered earlier).
from multiprocessing import util as _mp_util  # noqa: F401

from . import _cproc
from . import context

__all__ = ["Popen"]


class _Child:
    """What is forked: sets cproc's start method, then runs the Process."""

    def __init__(self, process_obj):
        self.process_obj = process_obj

    def _bootstrap(self, parent_sentinel=None):
        context._set_child_start_method(self.process_obj)
        return self.process_obj._bootstrap(parent_sentinel=parent_sentinel)


class Popen(_cproc.Popen):
    method = "fork"

    def __init__(self, process_obj):
        self._launch_fork(_Child(process_obj))

    def duplicate_for_child(self, fd):
        return fd
