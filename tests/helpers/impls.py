"""The implementations ("multiprocessing", "cproc") and start methods under
test: pytest parameters, one object per (implementation, start method)."""

import importlib
import pickle

from helpers.targets import proc_noop


START_METHODS = ("fork", "spawn", "forkserver")
PROCESS_CLASS = {"fork": "ForkProcess", "spawn": "SpawnProcess", "forkserver": "ForkServerProcess"}


def impl_method_params(methods=START_METHODS, impls=("multiprocessing", "cproc")):
    """pytest params (impl name, start method), ids like "cproc-spawn"."""
    import pytest

    return [pytest.param((name, method), id=f"{name}-{method}") for name in impls for method in methods]


class ProcImpl:
    """One implementation ("multiprocessing" or "cproc") with one start method.

    .module is the package (module-level functions), .ctx its context for the
    start method, .Process that context's Process class, .wait the package's
    connection.wait.
    """

    def __init__(self, name, method):
        self.name = name
        self.method = method

    @property
    def module(self):
        return importlib.import_module(self.name)

    @property
    def ctx(self):
        return self.module.get_context(self.method)

    @property
    def Process(self):  # noqa: N802 - mirrors the API
        return self.ctx.Process

    @property
    def wait(self):
        return importlib.import_module(self.name + ".connection").wait

    @property
    def process_class_name(self):
        return PROCESS_CLASS[self.method]

    def reference(self):
        return ProcImpl("multiprocessing", self.method)

    def __repr__(self):
        return f"{self.name}-{self.method}"


def pickle_error(obj):
    """(type, message) of what the running Python's pickle raises for obj: the
    error multiprocessing passes on when it pickles obj by reference (3.13 says
    "Can't get local object ..." where 3.9-3.12 say "Can't pickle local object ...")."""
    try:
        pickle.dumps(obj)
    except Exception as exc:  # noqa: BLE001 - the error is the result
        return type(exc), str(exc)
    raise AssertionError(f"{obj!r} pickles")


def warm_up_start_methods():
    """Start (and join) one empty process per start method and implementation.

    The first forkserver process starts the server, whose pipe and socket the
    parent keeps for its whole life (multiprocessing's and cproc's alike); a
    module-scoped fixture calls this first, so that these fds are in every
    test's leak baseline.  A failure here is left to the tests to report.
    """
    for name in ("multiprocessing", "cproc"):
        for method in START_METHODS:
            try:
                p = ProcImpl(name, method).Process(target=proc_noop)
                p.start()
                p.join(30)
                if p.exitcode is None:
                    p.kill()
                    p.join(5)
                p.close()
            except Exception:  # noqa: BLE001 - the tests report it
                pass
