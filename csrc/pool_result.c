/* pool_result.c — ApplyResult and MapResult, what Pool.apply_async and
 * map_async return (pool.c delivers the tasks' outcomes to them).
 *
 * A waiter sleeps on a futex word with the GIL released; setting a result
 * wakes it. They are awaitable (cproc.pool._result_await): an awaiting
 * event loop registers a callable with _add_awaiter, which the collector
 * calls once the result is set (it writes to an fd the loop watches).
 */
#include "cproc.h"

#include <stddef.h>

typedef struct {
    PyObject_HEAD
    _Atomic uint32_t ready;             /* futex word: 0 pending, 1 ready */
    _Atomic uint32_t waiters;
    int success;
    PyObject *value;                    /* the result, the exception, or MapResult's list */
    PyObject *callback, *error_callback;
    PyObject *pool;                     /* keeps the pool alive until ready, as multiprocessing */
    PyObject *awaiters;                 /* NULL, or a list of callables: called with self once ready */
    /* MapResult */
    uint64_t first_tid;
    Py_ssize_t chunksize, left;
    PyObject *weakreflist;
} ResultObject;

static PyTypeObject ApplyResultType, MapResultType;

static int result_traverse(ResultObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->value);
    Py_VISIT(self->callback);
    Py_VISIT(self->error_callback);
    Py_VISIT(self->pool);
    Py_VISIT(self->awaiters);
    return 0;
}

static int result_clear(ResultObject *self)
{
    Py_CLEAR(self->value);
    Py_CLEAR(self->callback);
    Py_CLEAR(self->error_callback);
    Py_CLEAR(self->pool);
    Py_CLEAR(self->awaiters);
    return 0;
}

static void result_dealloc(ResultObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    result_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int parse_callbacks(ResultObject *self, PyObject *pool, PyObject *callback, PyObject *error_callback)
{
    self->pool = Py_NewRef(pool);
    self->callback = callback == Py_None ? NULL : Py_NewRef(callback);
    self->error_callback = error_callback == Py_None ? NULL : Py_NewRef(error_callback);
    self->success = 1;
    return 0;
}

/* ApplyResult(pool, callback, error_callback) */
static int applyresult_init(ResultObject *self, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"pool", "callback", "error_callback", NULL};
    PyObject *pool, *cb = Py_None, *ecb = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OO:ApplyResult", names, &pool, &cb, &ecb))
        return -1;
    result_clear(self);
    atomic_store(&self->ready, 0);
    return parse_callbacks(self, pool, cb, ecb);
}

/* MapResult(pool, first_tid, chunksize, length, callback, error_callback) */
static int mapresult_init(ResultObject *self, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"pool", "first_tid", "chunksize", "length", "callback", "error_callback", NULL};
    PyObject *pool, *cb = Py_None, *ecb = Py_None;
    unsigned long long first;
    Py_ssize_t chunksize, length;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OKnn|OO:MapResult", names, &pool, &first,
                                     &chunksize, &length, &cb, &ecb))
        return -1;
    if (length < 0) {
        PyErr_SetString(PyExc_ValueError, "length must not be negative");
        return -1;
    }
    result_clear(self);
    atomic_store(&self->ready, 0);
    if (parse_callbacks(self, pool, cb, ecb) < 0)
        return -1;
    self->first_tid = first;
    self->chunksize = chunksize;
    self->value = PyList_New(length);
    if (self->value == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < length; i++)
        PyList_SET_ITEM(self->value, i, Py_NewRef(Py_None));
    if (chunksize <= 0 || length == 0) {  /* nothing to do: ready at once, no callback (as multiprocessing) */
        self->left = 0;
        atomic_store(&self->ready, 1);
        Py_CLEAR(self->pool);
    } else
        self->left = length / chunksize + (length % chunksize != 0);
    return 0;
}

static void call_callback(PyObject *fn, PyObject *arg)
{
    if (fn == NULL)
        return;
    PyObject *r = PyObject_CallOneArg(fn, arg);
    if (r == NULL)                      /* multiprocessing's result thread would die here; we report and go on */
        PyErr_WriteUnraisable(fn);
    Py_XDECREF(r);
}

static void result_finish(ResultObject *self)
{
    if (self->success)
        call_callback(self->callback, self->value);
    else
        call_callback(self->error_callback, self->value);
    atomic_store(&self->ready, 1);
    if (atomic_load(&self->waiters) != 0)
        cproc_futex_wake(&self->ready, INT_MAX);
    /* Taken right after ready is set, the GIL held throughout: an awaiter
     * added later sees ready (_add_awaiter), none is missed. */
    PyObject *awaiters = self->awaiters;
    self->awaiters = NULL;
    if (awaiters != NULL && PyList_Check(awaiters)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(awaiters); i++)
            call_callback(PyList_GET_ITEM(awaiters, i), (PyObject *)self);
    }
    Py_XDECREF(awaiters);
    Py_CLEAR(self->pool);
}

/* One task's outcome. Steals nothing; GIL held. */
static int result_deliver(ResultObject *self, uint64_t tid, int ok, PyObject *value)
{
    if (atomic_load(&self->ready))
        return 0;
    if (!PyObject_TypeCheck(self, &MapResultType)) {
        self->success = ok;
        Py_XSETREF(self->value, Py_NewRef(value));
        result_finish(self);
        return 0;
    }
    if (cproc_check_init((PyObject *)self, self->value != NULL && self->chunksize > 0 &&
                                           (!self->success || PyList_Check(self->value))) < 0)
        return -1;
    Py_ssize_t lo = 0, hi = 0;
    if (ok && self->success) {          /* the chunk's place in the list, checked before anything changes */
        Py_ssize_t len = PyList_GET_SIZE(self->value);
        uint64_t i = tid - self->first_tid;
        if (tid < self->first_tid || i > (uint64_t)(len / self->chunksize)) {
            PyErr_SetString(PyExc_ValueError, "cproc pool: a task id outside the map");
            return -1;
        }
        lo = (Py_ssize_t)i * self->chunksize;
        hi = len - lo > self->chunksize ? lo + self->chunksize : len;
        if (lo >= len || !PyList_Check(value) || PyList_GET_SIZE(value) != hi - lo) {
            PyErr_SetString(PyExc_RuntimeError, "cproc pool: a chunk's result has the wrong length");
            return -1;
        }
    }
    self->left--;
    if (ok && self->success) {
        if (PyList_SetSlice(self->value, lo, hi, value) < 0)
            return -1;
    } else if (!ok && self->success) {
        self->success = 0;              /* only the first exception is kept */
        Py_XSETREF(self->value, Py_NewRef(value));
    }
    if (self->left == 0)
        result_finish(self);
    return 0;
}

static PyObject *result_py_deliver(ResultObject *self, PyObject *args)
{
    unsigned long long tid;
    int ok;
    PyObject *value;
    if (!PyArg_ParseTuple(args, "KpO:_deliver", &tid, &ok, &value))
        return NULL;
    if (result_deliver(self, tid, ok, value) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *result_ready(ResultObject *self, PyObject *Py_UNUSED(unused))
{
    return PyBool_FromLong(atomic_load(&self->ready));
}

static PyObject *result_successful(ResultObject *self, PyObject *Py_UNUSED(unused))
{
    if (!atomic_load(&self->ready)) {
        PyErr_Format(PyExc_ValueError, "%R not ready", (PyObject *)self);
        return NULL;
    }
    return PyBool_FromLong(self->success);
}

/* _add_awaiter(fn) -> whether fn will be called (with self) when the result
 * is set: False if it already is. */
static PyObject *result_add_awaiter(ResultObject *self, PyObject *fn)
{
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "an awaiter must be callable");
        return NULL;
    }
    if (atomic_load(&self->ready))
        Py_RETURN_FALSE;
    if (self->awaiters == NULL && (self->awaiters = PyList_New(0)) == NULL)
        return NULL;
    if (PyList_Append(self->awaiters, fn) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

/* _remove_awaiter(fn): forget fn (an await that was cancelled), if there. */
static PyObject *result_remove_awaiter(ResultObject *self, PyObject *fn)
{
    PyObject *list = self->awaiters;
    if (list == NULL || !PyList_Check(list))
        Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        int eq = PyObject_RichCompareBool(PyList_GET_ITEM(list, i), fn, Py_EQ);
        if (eq < 0)
            return NULL;
        if (eq) {
            if (PyList_SetSlice(list, i, i + 1, NULL) < 0)
                return NULL;
            break;
        }
    }
    Py_RETURN_NONE;
}

/* await result: cproc.pool._result_await(self), an iterator. */
static PyObject *result_am_await(PyObject *self)
{
    PyObject *pool = PyImport_ImportModule("cproc.pool");
    PyObject *r = pool ? PyObject_CallMethod(pool, "_result_await", "O", self) : NULL;
    Py_XDECREF(pool);
    return r;
}

static PyAsyncMethods result_as_async = {.am_await = result_am_await};

static int try_ready(void *ctx, uint32_t *seen)
{
    ResultObject *self = ctx;
    *seen = atomic_load(&self->ready);
    return *seen != 0;
}

/* 0 ready, 1 timed out, -1 error (KeyboardInterrupt...). */
static int result_wait_until(ResultObject *self, PyObject *timeout)
{
    if (atomic_load(&self->ready))
        return 0;
    int64_t deadline;
    if (cproc_deadline_from_timeout(timeout, &deadline) < 0)
        return -1;
    int r = cproc_wait(&self->ready, &self->waiters, try_ready, NULL, self, deadline, 0);
    return r == CPROC_WAIT_ERROR ? -1 : r == CPROC_WAIT_TIMEOUT;
}

static PyObject *result_wait(ResultObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"timeout", NULL};
    PyObject *a[1];
    if (cproc_parse_args("wait", args, nargs, kwnames, names, 0, a) < 0 ||
        result_wait_until(self, a[0] ? a[0] : Py_None) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *result_get(ResultObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"timeout", NULL};
    PyObject *a[1];
    if (cproc_parse_args("get", args, nargs, kwnames, names, 0, a) < 0)
        return NULL;
    int r = result_wait_until(self, a[0] ? a[0] : Py_None);
    if (r < 0)
        return NULL;
    if (r > 0) {
        PyObject *mp = PyImport_ImportModule("multiprocessing");
        PyObject *timeout_error = mp ? PyObject_GetAttrString(mp, "TimeoutError") : NULL;
        Py_XDECREF(mp);
        if (timeout_error != NULL) {
            PyErr_SetNone(timeout_error);
            Py_DECREF(timeout_error);
        }
        return NULL;
    }
    if (self->success)
        return Py_NewRef(self->value ? self->value : Py_None);
    if (PyExceptionInstance_Check(self->value))
        PyErr_SetObject((PyObject *)Py_TYPE(self->value), self->value);
    else
        PyErr_SetObject(PyExc_RuntimeError, self->value);
    return NULL;
}

static PyObject *result_class_getitem(PyObject *cls, PyObject *item)
{
    return Py_GenericAlias(cls, item);
}

static PyMethodDef result_methods[] = {
    {"ready", (PyCFunction)result_ready, METH_NOARGS, "Return whether the call has completed."},
    {"successful", (PyCFunction)result_successful, METH_NOARGS,
     "Return whether the call completed without raising an exception; ValueError if not ready."},
    {"wait", (PyCFunction)(void (*)(void))result_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout=None): wait until the result is available or until timeout seconds pass."},
    {"get", (PyCFunction)(void (*)(void))result_get, METH_FASTCALL | METH_KEYWORDS,
     "get(timeout=None): the result when it arrives; re-raises the task's exception; "
     "multiprocessing.TimeoutError if it does not arrive within timeout seconds."},
    {"_deliver", (PyCFunction)result_py_deliver, METH_VARARGS, "_deliver(tid, ok, value): a task's outcome."},
    {"_add_awaiter", (PyCFunction)result_add_awaiter, METH_O,
     "_add_awaiter(fn) -> bool: call fn(self) once the result is set; False if it already is."},
    {"_remove_awaiter", (PyCFunction)result_remove_awaiter, METH_O, "_remove_awaiter(fn): forget fn."},
    {"__class_getitem__", result_class_getitem, METH_O | METH_CLASS, "See PEP 585"},
    {NULL},
};

static PyTypeObject ApplyResultType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cproc.pool.ApplyResult",
    .tp_basicsize = sizeof(ResultObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The result of Pool.apply_async(): get(), wait(), ready(), successful().",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)applyresult_init,
    .tp_dealloc = (destructor)result_dealloc,
    .tp_traverse = (traverseproc)result_traverse,
    .tp_clear = (inquiry)result_clear,
    .tp_methods = result_methods,
    .tp_as_async = &result_as_async,
    .tp_weaklistoffset = offsetof(ResultObject, weakreflist),
};

static PyTypeObject MapResultType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cproc.pool.MapResult",
    .tp_basicsize = sizeof(ResultObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The result of Pool.map_async() and starmap_async().",
    .tp_init = (initproc)mapresult_init,
    .tp_dealloc = (destructor)result_dealloc,
    .tp_traverse = (traverseproc)result_traverse,
    .tp_clear = (inquiry)result_clear,
};

int cproc_pool_result_deliver(PyObject *target, uint64_t tid, int ok, PyObject *value)
{
    if (PyObject_TypeCheck(target, &ApplyResultType) || PyObject_TypeCheck(target, &MapResultType))
        return result_deliver((ResultObject *)target, tid, ok, value);
    PyObject *res = PyObject_CallMethod(target, "_deliver", "KiO", (unsigned long long)tid, ok, value);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

int cproc_pool_result_init(PyObject *module)
{
    if (PyType_Ready(&ApplyResultType) < 0)
        return -1;
    MapResultType.tp_base = &ApplyResultType;
    if (PyType_Ready(&MapResultType) < 0)
        return -1;
    Py_INCREF(&ApplyResultType);
    if (PyModule_AddObject(module, "ApplyResult", (PyObject *)&ApplyResultType) < 0) {
        Py_DECREF(&ApplyResultType);
        return -1;
    }
    Py_INCREF(&MapResultType);
    if (PyModule_AddObject(module, "MapResult", (PyObject *)&MapResultType) < 0) {
        Py_DECREF(&MapResultType);
        return -1;
    }
    return 0;
}
