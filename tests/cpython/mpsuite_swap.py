"""Make CPython's test._test_multiprocessing see cproc as ``multiprocessing``.

The test module is loaded with its own ``__import__`` (a per-module
``__builtins__``): every ``import multiprocessing...`` it runs — at module
level, in class bodies, inside test functions — gets a proxy instead of the
standard module. A proxy answers each attribute with cproc's object when cproc
has one (cproc, cproc.connection, cproc.queues, ...) and with the standard
library's otherwise (multiprocessing.heap, .util, .dummy, .shared_memory,
.resource_tracker, and stock's private names cproc does not have).  The rest
of the interpreter, cproc included, keeps the real multiprocessing.

So the mixins' class attributes (``Process = multiprocessing.Process``,
``Lock = staticmethod(multiprocessing.Lock)``...), the module-level names
(``wait``, ``BaseManager``, ``Value``...) and the classes the module derives
at import (``MyManager(BaseManager)``) are cproc's from the start.

install() puts a finder on sys.meta_path so that the test module is loaded
this way wherever it is imported: in the test runner, and in every spawn or
forkserver child (the runner's main script calls install() at import, and
children import the main script, as __mp_main__, before they unpickle their
Process object).  Names served by stock are counted in ``fallbacks``.
"""

import builtins
import importlib
import importlib.abc
import importlib.util
import sys
import types

TEST_MODULE = "test._test_multiprocessing"

fallbacks = set()          # "multiprocessing.heap", "multiprocessing.connection.CHALLENGE", ...
_proxies = {}


class _Proxy(types.ModuleType):
    """A module that is cproc's ``cproc_name`` first, stock's ``stock_name`` second."""

    def __init__(self, stock_name, cproc_module):
        super().__init__(stock_name)
        object.__setattr__(self, "_stock", sys.modules[stock_name])
        object.__setattr__(self, "_cproc", cproc_module)

    def __getattr__(self, name):
        if name.startswith("__") and name != "__all__":   # __file__, __path__: stock's
            return getattr(self._stock, name)
        sub = _submodule(f"{self.__name__}.{name}")
        if sub is not None:
            return sub
        try:
            return getattr(self._cproc, name)
        except AttributeError:
            pass
        value = getattr(self._stock, name)
        fallbacks.add(f"{self.__name__}.{name}")
        return value

    def __setattr__(self, name, value):
        # e.g. multiprocessing.heap.BufferWrapper._heap = ...: the test sets
        # state on the module that owns it.
        target = self._cproc if hasattr(self._cproc, name) else self._stock
        setattr(target, name, value)

    def __dir__(self):
        return sorted(set(dir(self._cproc)) | set(dir(self._stock)))

    def __repr__(self):
        return f"<module {self.__name__!r} (cproc: {self._cproc.__name__!r})>"


def _submodule(stock_name):
    """The proxy (or stock module) for stock_name if it names a module, else None."""
    if stock_name in _proxies:
        return _proxies[stock_name]
    if stock_name not in sys.modules:
        try:
            if importlib.util.find_spec(stock_name) is None:
                return None
        except (ImportError, AttributeError, ValueError):
            return None
        try:
            importlib.import_module(stock_name)
        except ImportError:
            return None
    cproc_name = "cproc" + stock_name[len("multiprocessing"):]
    try:
        cproc_module = importlib.import_module(cproc_name)
    except ImportError:
        fallbacks.add(stock_name)
        result = sys.modules[stock_name]
    else:
        result = _Proxy(stock_name, cproc_module)
    _proxies[stock_name] = result
    return result


def _import(name, globals=None, locals=None, fromlist=(), level=0):
    module = builtins.__import__(name, globals, locals, fromlist, level)
    if level != 0 or not (name == "multiprocessing" or name.startswith("multiprocessing.")):
        return module
    if fromlist:
        return _submodule(name)
    return _submodule("multiprocessing")


class _Loader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__dict__["__builtins__"] = dict(vars(builtins), __import__=_import)
        self.loader.exec_module(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != TEST_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


def install():
    """Load test._test_multiprocessing with cproc as its multiprocessing (idempotent)."""
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    if TEST_MODULE in sys.modules:
        raise RuntimeError(f"{TEST_MODULE} was imported before the swap")
    import cproc  # noqa: F401
    import multiprocessing  # noqa: F401
    sys.meta_path.insert(0, _Finder())
