"""The test classes of CPython's test._test_multiprocessing, for one start method.

What CPython's test_multiprocessing_<method> modules do, in one module: the
start method comes from CPROC_MPSUITE_METHOD; with CPROC_MPSUITE_MODULE=cproc
the test module was loaded with cproc as its multiprocessing (mpsuite_swap,
installed by run_mp_suite.py before this import, in the runner and in every
child that re-imports it).  Spawn and forkserver children import this module
by name to find the test classes their Process objects refer to.
"""

import os

if os.environ.get("CPROC_MPSUITE_MODULE") == "cproc":
    import mpsuite_swap
    mpsuite_swap.install()

from test import _test_multiprocessing  # noqa: E402

METHOD = os.environ.get("CPROC_MPSUITE_METHOD", "fork")

_test_multiprocessing.install_tests_in_module_dict(globals(), METHOD)


if os.environ.get("CPROC_MPSUITE_MODULE") == "cproc":
    import cproc
    # The swap took: the mixins hand out cproc's objects.
    assert _test_multiprocessing.ProcessesMixin.Process is cproc.Process
    assert _test_multiprocessing.multiprocessing.Lock == cproc.Lock
