"""The fork start method: the child is forked in C (csrc/process.c)."""

import sys

# Imported at the first start, as multiprocessing's Popen modules do: it
# registers the exit handler that joins non-daemonic children and terminates
# daemonic ones (and so runs before atexit handlers registered earlier).
from multiprocessing import util as _mp_util  # noqa: F401

from . import _cproc
from . import context

__all__ = ["Popen"]

# From 3.10, Process._bootstrap() calls the Process's _after_fork(), which
# sets cproc's start method in the child (context.py); 3.9's does not, so
# there the child runs the Process through _Child, which sets it first.
_BOOTSTRAP_SETS_START_METHOD = sys.version_info >= (3, 10)


class _Child:
    """What is forked on 3.9: sets cproc's start method, then runs the Process."""

    def __init__(self, process_obj):
        self.process_obj = process_obj

    def _bootstrap(self, parent_sentinel=None):
        context._set_child_start_method(self.process_obj)
        return self.process_obj._bootstrap(parent_sentinel=parent_sentinel)


class Popen(_cproc.Popen):
    method = "fork"

    def __init__(self, process_obj):
        # The child runs no more Python than multiprocessing's before the
        # target: each extra call is copy-on-write faults (RESULTS.md).
        self._launch_fork(process_obj if _BOOTSTRAP_SETS_START_METHOD else _Child(process_obj))

    def duplicate_for_child(self, fd):
        return fd
