"""The spawn start method: a fresh interpreter, started in C with posix_spawn,
reads the preparation data and the pickled Process from a pipe (cproc.spawn)."""

import io
import os

from multiprocessing import context as _mp_context

from . import _cproc
from . import reduction
from . import spawn

__all__ = ["Popen"]


class _DupFd:
    """An fd handed to the child at the same number (see duplicate_for_child)."""

    def __init__(self, fd):
        self.fd = fd

    def detach(self):
        return self.fd


class Popen(_cproc.Popen):
    method = "spawn"
    DupFd = _DupFd

    def __init__(self, process_obj):
        self._fds = []
        prep_data = spawn.get_preparation_data(process_obj._name)
        spawn.pass_resource_tracker(self, prep_data)
        fp = io.BytesIO()
        _mp_context.set_spawning_popen(self)   # lets the authkey be pickled
        try:
            reduction.dump(prep_data, fp)
            # plain pickle, or cloudpickle for what it refuses (lambdas,
            # closures, the functions of a __main__ the child cannot import)
            fp.write(spawn.dumps_process_obj(prep_data, process_obj))
        finally:
            _mp_context.set_spawning_popen(None)
        child_r, parent_w = os.pipe()
        try:
            cmd = spawn.get_command_line(pipe_handle=child_r)
            self._launch_spawn(spawn.get_executable(), cmd, [child_r] + self._fds)
        except BaseException:
            os.close(parent_w)
            raise
        finally:
            os.close(child_r)
        with open(parent_w, "wb", closefd=True) as f, fp.getbuffer() as payload:
            f.write(payload)

    def duplicate_for_child(self, fd):
        self._fds.append(fd)
        return fd
