"""The fork start method: the child is forked in C (csrc/process.c)."""

from . import _cproc

__all__ = ["Popen"]


class Popen(_cproc.Popen):
    method = "fork"

    def __init__(self, process_obj):
        self._launch_fork(process_obj)

    def duplicate_for_child(self, fd):
        return fd
