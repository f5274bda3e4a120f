/* semlock.c — Lock, RLock, Semaphore and BoundedSemaphore: one SemLock type
 * with a C subclass each, as CPython's _multiprocessing.SemLock under
 * multiprocessing.synchronize (Python side: cproc/synchronize.py).
 *
 * Owns: the shared state of a SemLock (cproc_semlock_t, a block in shared
 * memory, see shm.c), acquire and release (Lock and RLock are the pid-word
 * mutex of mutex.c, plus the holding thread and the recursion depth; a
 * semaphore is a counter waited on through cproc_wait), the OwnerDiedWarning
 * of a takeover, the reprs, and pickling: every SemLock is rebuilt through
 * the one SemLock._from_handle.
 */
#include "cproc.h"

#include <limits.h>
#include <stddef.h>

PyObject *cproc_OwnerDiedWarning;

/* A semaphore's counter: take one when positive. */
static int semaphore_try(void *arg, uint32_t *seen)
{
    cproc_semlock_t *s = arg;
    uint32_t v = atomic_load(&s->sem.value);
    while (v > 0)
        if (atomic_compare_exchange_weak(&s->sem.value, &v, v - 1))
            return 1;
    *seen = 0;
    return 0;
}

int cproc_semlock_is_mine(const cproc_semlock_t *s)
{
    return s->kind != CPROC_SEMAPHORE
        && atomic_load_explicit(&s->mutex.holder, memory_order_relaxed) == (uint32_t)cproc_pid
        && atomic_load_explicit(&s->owner_tid, memory_order_relaxed) == cproc_thread_id();
}

uint32_t cproc_semlock_unlock(cproc_semlock_t *s)
{
    s->count = 0;
    atomic_store_explicit(&s->owner_tid, 0, memory_order_relaxed);
    return cproc_mutex_unlock(&s->mutex);
}

static const char *kind_name(uint32_t kind)
{
    return kind == CPROC_LOCK ? "Lock" : kind == CPROC_RLOCK ? "RLock" : "Semaphore";
}

int cproc_semlock_acquire(SemLockObject *self, int blocking, int64_t deadline)
{
    cproc_semlock_t *s = self->s;
    if (s->kind == CPROC_SEMAPHORE) {
        uint32_t seen;
        if (semaphore_try(s, &seen))
            return 1;
        if (!blocking)
            return 0;
        int r = cproc_wait(&s->sem.value, &s->sem.waiters, semaphore_try, NULL, s, deadline, 0);
        return r == CPROC_WAIT_ERROR ? -1 : r == CPROC_WAIT_OK;
    }
    if (s->kind == CPROC_RLOCK && cproc_semlock_is_mine(s)) {
        if (s->count == UINT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "maximum recursion depth of RLock exceeded");
            return -1;
        }
        s->count++;
        return 1;
    }
    pid_t dead = 0;
    int r = cproc_mutex_lock(&s->mutex, blocking ? deadline : CPROC_NOWAIT, &dead);
    if (r <= 0)
        return r;
    atomic_store_explicit(&s->owner_tid, cproc_thread_id(), memory_order_relaxed);
    s->count = 1;
    if (r == CPROC_MUTEX_TAKEN_OVER &&
        PyErr_WarnFormat(cproc_OwnerDiedWarning, 1,
                         "cproc %s: its holder, process %d, died without releasing it; "
                         "this process now holds it (the data it guards may be inconsistent)",
                         kind_name(s->kind), (int)dead) < 0) {
        cproc_semlock_unlock(s);   /* the warning was turned into an error: do not keep the lock */
        return -1;
    }
    return 1;
}

int cproc_semlock_release(SemLockObject *self)
{
    cproc_semlock_t *s = self->s;
    if (s->kind == CPROC_SEMAPHORE) {
        uint32_t v = atomic_load(&s->sem.value);
        do {
            if (v >= s->maxvalue) {
                PyErr_SetString(PyExc_ValueError, "semaphore or lock released too many times");
                return -1;
            }
        } while (!atomic_compare_exchange_weak(&s->sem.value, &v, v + 1));
        cproc_wake_waiters(&s->sem.value, &s->sem.waiters, 1);
        return 0;
    }
    if (s->kind == CPROC_RLOCK) {
        if (!cproc_semlock_is_mine(s)) {
            PyErr_SetString(PyExc_AssertionError, "attempt to release recursive lock not owned by thread");
            return -1;
        }
        if (--s->count == 0)
            cproc_semlock_unlock(s);
        return 0;
    }
    /* Lock: any thread of any process may release it, as in multiprocessing;
     * of two releasing at once, one finds it free. */
    if (atomic_load(&s->mutex.holder) == 0 || cproc_semlock_unlock(s) == 0) {
        PyErr_SetString(PyExc_ValueError, "semaphore or lock released too many times");
        return -1;
    }
    return 0;
}

static int semlock_setup(SemLockObject *self, int kind, long long value, long long maxvalue)
{
    if (kind != CPROC_LOCK && kind != CPROC_RLOCK && kind != CPROC_SEMAPHORE) {
        PyErr_SetString(PyExc_ValueError, "unrecognized kind");
        return -1;
    }
    if (value < 0) {
        PyErr_SetString(PyExc_ValueError, "semaphore initial value must be >= 0");
        return -1;
    }
    if (value > INT_MAX || maxvalue > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "semaphore value is too large");
        return -1;
    }
    if (maxvalue <= 0 || value > maxvalue) {
        PyErr_SetString(PyExc_ValueError, "invalid maxvalue");
        return -1;
    }
    if (self->blk.seg != NULL) {
        PyErr_Format(PyExc_RuntimeError, "%s already initialised", Py_TYPE(self)->tp_name);
        return -1;
    }
    if (cproc_block_new(&self->blk, CPROC_KIND_SEMLOCK, sizeof(cproc_semlock_t)) < 0)
        return -1;
    cproc_semlock_t *s = self->blk.data;
    s->kind = (uint32_t)kind;
    s->maxvalue = (uint32_t)maxvalue;
    if (kind == CPROC_SEMAPHORE)
        atomic_store(&s->sem.value, (uint32_t)value);
    self->s = s;
    return 0;
}

static int semlock_init(SemLockObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"kind", "value", "maxvalue", NULL};
    int kind;
    long long value, maxvalue;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iLL:SemLock", kwlist, &kind, &value, &maxvalue))
        return -1;
    return semlock_setup(self, kind, value, maxvalue);
}

/* Lock(*, ctx=None) and RLock(*, ctx=None): ctx is accepted for
 * multiprocessing's signature and not needed. */
static int mutex_init(SemLockObject *self, PyObject *args, PyObject *kwds, int kind)
{
    static char *kwlist[] = {"ctx", NULL};
    PyObject *ctx = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$O", kwlist, &ctx))
        return -1;
    return semlock_setup(self, kind, 1, 1);
}

static int lock_init(SemLockObject *self, PyObject *args, PyObject *kwds)
{
    return mutex_init(self, args, kwds, CPROC_LOCK);
}

static int rlock_init(SemLockObject *self, PyObject *args, PyObject *kwds)
{
    return mutex_init(self, args, kwds, CPROC_RLOCK);
}

static int parse_semaphore_value(PyObject *args, PyObject *kwds, long long *value)
{
    static char *kwlist[] = {"value", "ctx", NULL};
    PyObject *v = NULL, *ctx = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$O", kwlist, &v, &ctx))
        return -1;
    *value = 1;
    if (v != NULL) {
        PyObject *index = PyNumber_Index(v);
        if (index == NULL)
            return -1;
        *value = PyLong_AsLongLong(index);
        Py_DECREF(index);
        if (*value == -1 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

static int semaphore_init(SemLockObject *self, PyObject *args, PyObject *kwds)
{
    long long value;
    if (parse_semaphore_value(args, kwds, &value) < 0)
        return -1;
    return semlock_setup(self, CPROC_SEMAPHORE, value, INT_MAX);
}

static int bounded_semaphore_init(SemLockObject *self, PyObject *args, PyObject *kwds)
{
    long long value;
    if (parse_semaphore_value(args, kwds, &value) < 0)
        return -1;
    return semlock_setup(self, CPROC_SEMAPHORE, value, value > 0 ? value : 1);
}

static PyObject *semlock_from_handle(PyTypeObject *type, PyObject *handle)
{
    SemLockObject *self = (SemLockObject *)cproc_shared_attach(type, handle, CPROC_KIND_SEMLOCK);
    if (self != NULL)
        self->s = self->blk.data;
    return (PyObject *)self;
}

PyObject *cproc_semlock_acquire_method(SemLockObject *self, PyObject *const *args, Py_ssize_t nargs,
                                       PyObject *kwnames)
{
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    int blocking = 1;
    int64_t deadline = CPROC_FOREVER;
    if ((nargs != 0 || kwnames != NULL) &&
        cproc_parse_block_timeout("acquire", args, nargs, kwnames, &blocking, &deadline) < 0)
        return NULL;
    int r = cproc_semlock_acquire(self, blocking, deadline);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

PyObject *cproc_semlock_release_method(SemLockObject *self, PyObject *unused)
{
    (void)unused;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    if (cproc_semlock_release(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *semlock_enter(SemLockObject *self, PyObject *unused)
{
    (void)unused;
    return cproc_semlock_acquire_method(self, NULL, 0, NULL);
}

static PyObject *semlock_exit(SemLockObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args; (void)nargs;
    return cproc_semlock_release_method(self, NULL);
}

static PyObject *semlock_count(SemLockObject *self, PyObject *unused)
{
    (void)unused;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    cproc_semlock_t *s = self->s;
    if (s->kind == CPROC_SEMAPHORE || atomic_load(&s->mutex.holder) != (uint32_t)cproc_pid)
        return PyLong_FromLong(0);
    return PyLong_FromUnsignedLong(s->count);
}

static PyObject *semlock_is_mine(SemLockObject *self, PyObject *unused)
{
    (void)unused;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    return PyBool_FromLong(cproc_semlock_is_mine(self->s));
}

static long semlock_value(const cproc_semlock_t *s)
{
    if (s->kind == CPROC_SEMAPHORE)
        return (long)atomic_load(&s->sem.value);
    return atomic_load(&s->mutex.holder) == 0;
}

static PyObject *semlock_get_value(SemLockObject *self, PyObject *unused)
{
    (void)unused;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    return PyLong_FromLong(semlock_value(self->s));
}

static PyObject *semlock_is_zero(SemLockObject *self, PyObject *unused)
{
    (void)unused;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    return PyBool_FromLong(semlock_value(self->s) == 0);
}

static PyObject *semlock_owner_pid(SemLockObject *self, void *closure)
{
    (void)closure;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    if (self->s->kind == CPROC_SEMAPHORE)
        Py_RETURN_NONE;
    uint32_t w = atomic_load(&self->s->mutex.holder);
    if (w == 0)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(w);
}

static PyObject *semlock_get_kind(SemLockObject *self, void *closure)
{
    (void)closure;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(self->s->kind);
}

static PyObject *semlock_get_maxvalue(SemLockObject *self, void *closure)
{
    (void)closure;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(self->s->maxvalue);
}

/* multiprocessing's lock classes wrap a _multiprocessing.SemLock in
 * `_semlock`; code written against them (multiprocessing.queues.Queue, used
 * by concurrent.futures with a cproc context) reaches the value through it.
 * cproc's objects are their own SemLock. */
static PyObject *semlock_get_semlock(SemLockObject *self, void *closure)
{
    (void)closure;
    Py_INCREF(self);
    return (PyObject *)self;
}

/* _multiprocessing.SemLock._after_fork() zeroes the recursion count a forked
 * child inherited. cproc's holder is a pid, which a child never has: nothing
 * to reset. */
static PyObject *semlock_after_fork(SemLockObject *self, PyObject *unused)
{
    (void)self; (void)unused;
    Py_RETURN_NONE;
}

static PyObject *semlock_reduce(SemLockObject *self, PyObject *unused)
{
    (void)unused;
    return cproc_shared_reduce((PyObject *)self, NULL);
}

#define SEMLOCK_METHODS \
    {"acquire", (PyCFunction)(void (*)(void))cproc_semlock_acquire_method, METH_FASTCALL | METH_KEYWORDS, \
     "acquire(block=True, timeout=None) -> bool\n\nAcquire the lock or semaphore; with a timeout " \
     "(seconds), give up after it and return False."}, \
    {"release", (PyCFunction)cproc_semlock_release_method, METH_NOARGS, "Release the lock or semaphore."}, \
    {"__enter__", (PyCFunction)semlock_enter, METH_NOARGS, "Acquire, blocking."}, \
    {"__exit__", (PyCFunction)(void (*)(void))semlock_exit, METH_FASTCALL, "Release."}, \
    {"_count", (PyCFunction)semlock_count, METH_NOARGS, "Recursion depth held by this process."}, \
    {"_is_mine", (PyCFunction)semlock_is_mine, METH_NOARGS, "Whether the calling thread holds it."}, \
    {"_get_value", (PyCFunction)semlock_get_value, METH_NOARGS, "Current value (1 = free for locks)."}, \
    {"_is_zero", (PyCFunction)semlock_is_zero, METH_NOARGS, "Whether the value is 0."}, \
    {"_after_fork", (PyCFunction)semlock_after_fork, METH_NOARGS, \
     "Nothing to reset in a forked child (the holder is a pid)."}, \
    {"_from_handle", (PyCFunction)semlock_from_handle, METH_O | METH_CLASS, "Attach by handle."}, \
    {"__reduce__", (PyCFunction)semlock_reduce, METH_NOARGS, NULL},

static PyMethodDef semlock_methods[] = {
    SEMLOCK_METHODS
    {NULL}
};

static PyGetSetDef semlock_getset[] = {
    {"kind", (getter)semlock_get_kind, NULL, "0 Lock, 1 RLock, 2 Semaphore", NULL},
    {"maxvalue", (getter)semlock_get_maxvalue, NULL, "the largest value", NULL},
    {"owner_pid", (getter)semlock_owner_pid, NULL, "pid of the process holding the lock, or None", NULL},
    {"_semlock", (getter)semlock_get_semlock, NULL, "the object itself (multiprocessing's lock "
     "classes keep their _multiprocessing.SemLock there)", NULL},
    {NULL}
};

PyTypeObject cproc_SemLockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cproc._cproc.SemLock",
    .tp_basicsize = sizeof(SemLockObject),
    .tp_weaklistoffset = offsetof(SemLockObject, weakreflist),
    .tp_dealloc = (destructor)cproc_shared_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "SemLock(kind, value, maxvalue)\n\nA lock or semaphore in shared memory.",
    .tp_methods = semlock_methods,
    .tp_getset = semlock_getset,
    .tp_init = (initproc)semlock_init,
    .tp_new = PyType_GenericNew,
};

/* ---- the concrete classes: C types of their own, so that CPython's call
 * specialisation (exact type only) applies to lock.acquire() & co. ------- */

/* multiprocessing's name for the holder: the process name, |thread name. */
static PyObject *owner_name(void)
{
    PyObject *mod = PyImport_ImportModule("cproc.synchronize");
    if (mod == NULL)
        return NULL;
    PyObject *name = PyObject_CallMethod(mod, "_owner_name", NULL);
    Py_DECREF(mod);
    return name;
}

static PyObject *mutex_repr(SemLockObject *self)
{
    if (self->blk.seg == NULL)
        return PyUnicode_FromFormat("<%s(unknown)>", cproc_short_type_name((PyObject *)self));
    cproc_semlock_t *s = self->s;
    int recursive = s->kind == CPROC_RLOCK;
    uint32_t owner = atomic_load(&s->mutex.holder);
    PyObject *name;
    if (cproc_semlock_is_mine(s)) {
        name = owner_name();
        if (name == NULL)
            return NULL;
    } else
        name = PyUnicode_FromString(owner == 0 ? "None" : owner == (uint32_t)cproc_pid ? "SomeOtherThread"
                                                                                   : "SomeOtherProcess");
    if (name == NULL)
        return NULL;
    PyObject *r;
    if (!recursive)
        r = PyUnicode_FromFormat("<%s(owner=%U)>", cproc_short_type_name((PyObject *)self), name);
    else if (cproc_semlock_is_mine(s))
        r = PyUnicode_FromFormat("<%s(%U, %u)>", cproc_short_type_name((PyObject *)self), name, s->count);
    else
        r = PyUnicode_FromFormat("<%s(%U, %s)>", cproc_short_type_name((PyObject *)self), name,
                                 owner == 0 ? "0" : "nonzero");
    Py_DECREF(name);
    return r;
}

static PyObject *semaphore_repr(SemLockObject *self)
{
    if (self->blk.seg == NULL)
        return PyUnicode_FromFormat("<%s(value=unknown)>", cproc_short_type_name((PyObject *)self));
    long value = semlock_value(self->s);
    if (Py_TYPE(self) == &cproc_BoundedSemaphoreType || self->s->maxvalue != INT_MAX)
        return PyUnicode_FromFormat("<%s(value=%ld, maxvalue=%u)>", cproc_short_type_name((PyObject *)self),
                                    value, self->s->maxvalue);
    return PyUnicode_FromFormat("<%s(value=%ld)>", cproc_short_type_name((PyObject *)self), value);
}

static PyMethodDef lock_methods[] = {
    SEMLOCK_METHODS
    {NULL}
};

static PyMethodDef semaphore_methods[] = {
    SEMLOCK_METHODS
    {"get_value", (PyCFunction)semlock_get_value, METH_NOARGS, "get_value() -> int\n\nThe counter."},
    {NULL}
};

#define SEMLOCK_SUBTYPE(cname, pyname, base, init, repr, methods, doc) \
    PyTypeObject cname = { \
        PyVarObject_HEAD_INIT(NULL, 0) \
        .tp_name = "cproc.synchronize." pyname, \
        .tp_basicsize = sizeof(SemLockObject), \
        .tp_weaklistoffset = offsetof(SemLockObject, weakreflist), \
        .tp_dealloc = (destructor)cproc_shared_dealloc, \
        .tp_repr = (reprfunc)repr, \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, \
        .tp_doc = doc, \
        .tp_methods = methods, \
        .tp_base = base, \
        .tp_init = (initproc)init, \
        .tp_new = PyType_GenericNew, \
    }

SEMLOCK_SUBTYPE(cproc_LockType, "Lock", &cproc_SemLockType, lock_init, mutex_repr, lock_methods,
    "Lock(*, ctx=None)\n\nA non-recursive lock in shared memory; any thread of any process may "
    "release it. If the process holding it dies, a process blocked in acquire() takes it over "
    "(within about 100 ms) with an OwnerDiedWarning.");
SEMLOCK_SUBTYPE(cproc_RLockType, "RLock", &cproc_SemLockType, rlock_init, mutex_repr, lock_methods,
    "RLock(*, ctx=None)\n\nA recursive lock in shared memory, owned by one thread of one process. "
    "If the owning process dies, a process blocked in acquire() takes it over with an "
    "OwnerDiedWarning.");
SEMLOCK_SUBTYPE(cproc_SemaphoreType, "Semaphore", &cproc_SemLockType, semaphore_init, semaphore_repr,
    semaphore_methods, "Semaphore(value=1, *, ctx=None)\n\nA counting semaphore in shared memory.");
SEMLOCK_SUBTYPE(cproc_BoundedSemaphoreType, "BoundedSemaphore", &cproc_SemaphoreType,
    bounded_semaphore_init, semaphore_repr, semaphore_methods,
    "BoundedSemaphore(value=1, *, ctx=None)\n\nA semaphore that refuses to be released above its "
    "initial value (ValueError).");

int cproc_semlock_init(PyObject *module)
{
    cproc_OwnerDiedWarning = PyErr_NewExceptionWithDoc(
        "cproc.OwnerDiedWarning",
        "Issued by acquire() when it takes over a Lock or RLock whose holder process died "
        "while holding it. The caller now holds the lock; what it protects may be half-updated.",
        PyExc_RuntimeWarning, NULL);
    if (cproc_OwnerDiedWarning == NULL)
        return -1;
    Py_INCREF(cproc_OwnerDiedWarning);
    if (PyModule_AddObject(module, "OwnerDiedWarning", cproc_OwnerDiedWarning) < 0) {
        Py_DECREF(cproc_OwnerDiedWarning);
        return -1;
    }
    return 0;
}
