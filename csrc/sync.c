/* sync.c — Lock, RLock, Semaphore, BoundedSemaphore (one SemLock type, as in
 * CPython's _multiprocessing), Event, Condition and Barrier.
 *
 * Owns: the shared state of each primitive (a block in shared memory, see
 * shm.c) and its atomic fast paths. Every wait goes through cproc_wait()
 * (futex.c), which releases the GIL and answers Ctrl+C. Lock and RLock, and
 * the internal locks of Condition and Barrier, are the pid-word mutex of
 * mutex.c: a waiter that finds the holder dead takes the lock over (Lock and
 * RLock with an OwnerDiedWarning) instead of hanging.
 * Never calls into Python while holding a primitive's internal lock.
 */
#include "cproc.h"

#include <limits.h>
#include <string.h>
#include <structmember.h>

PyObject *cproc_OwnerDiedWarning;

/* ======================================================================== */
/* SemLock: the lock/semaphore core                                         */
/* ======================================================================== */

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

/* Give a held Lock/RLock back completely (no ownership checks); returns the
 * holder it freed, 0 when it was free. */
static uint32_t semlock_unlock(cproc_semlock_t *s)
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
        int r = cproc_wait(&s->sem.value, &s->sem.waiters, semaphore_try, NULL, s, deadline);
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
        semlock_unlock(s);   /* the warning was turned into an error: do not keep the lock */
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
            semlock_unlock(s);
        return 0;
    }
    /* Lock: any thread of any process may release it, as in multiprocessing;
     * of two releasing at once, one finds it free. */
    if (atomic_load(&s->mutex.holder) == 0 || semlock_unlock(s) == 0) {
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
static int lock_init(SemLockObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ctx", NULL};
    PyObject *ctx = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$O", kwlist, &ctx))
        return -1;
    return semlock_setup(self, CPROC_LOCK, 1, 1);
}

static int rlock_init(SemLockObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ctx", NULL};
    PyObject *ctx = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$O", kwlist, &ctx))
        return -1;
    return semlock_setup(self, CPROC_RLOCK, 1, 1);
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

static PyObject *semlock_acquire(SemLockObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
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

static PyObject *semlock_release(SemLockObject *self, PyObject *unused)
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
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    int r = cproc_semlock_acquire(self, 1, CPROC_FOREVER);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *semlock_exit(SemLockObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args; (void)nargs;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    if (cproc_semlock_release(self) < 0)
        return NULL;
    Py_RETURN_NONE;
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
    {"acquire", (PyCFunction)(void (*)(void))semlock_acquire, METH_FASTCALL | METH_KEYWORDS, \
     "acquire(block=True, timeout=None) -> bool\n\nAcquire the lock or semaphore; with a timeout " \
     "(seconds), give up after it and return False."}, \
    {"release", (PyCFunction)semlock_release, METH_NOARGS, "Release the lock or semaphore."}, \
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

static const char *short_type_name(PyObject *self)
{
    const char *name = Py_TYPE(self)->tp_name, *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

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
        return PyUnicode_FromFormat("<%s(unknown)>", short_type_name((PyObject *)self));
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
        r = PyUnicode_FromFormat("<%s(owner=%U)>", short_type_name((PyObject *)self), name);
    else if (cproc_semlock_is_mine(s))
        r = PyUnicode_FromFormat("<%s(%U, %u)>", short_type_name((PyObject *)self), name, s->count);
    else
        r = PyUnicode_FromFormat("<%s(%U, %s)>", short_type_name((PyObject *)self), name,
                                 owner == 0 ? "0" : "nonzero");
    Py_DECREF(name);
    return r;
}

static PyObject *semaphore_repr(SemLockObject *self)
{
    if (self->blk.seg == NULL)
        return PyUnicode_FromFormat("<%s(value=unknown)>", short_type_name((PyObject *)self));
    long value = semlock_value(self->s);
    if (Py_TYPE(self) == &cproc_BoundedSemaphoreType || self->s->maxvalue != INT_MAX)
        return PyUnicode_FromFormat("<%s(value=%ld, maxvalue=%u)>", short_type_name((PyObject *)self),
                                    value, self->s->maxvalue);
    return PyUnicode_FromFormat("<%s(value=%ld)>", short_type_name((PyObject *)self), value);
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

/* ======================================================================== */
/* Event                                                                     */
/* ======================================================================== */

/* word = (number of set() calls that raised the flag << 1) | flag. set()
 * moves the count on, so a waiter that sleeps while word == what it saw is
 * woken by every set(), even one that clear() undoes at once (a "pulse"):
 * its wait() then returns the flag as it is, False, as multiprocessing's. */
typedef struct {
    _Atomic uint32_t word;
    _Atomic uint32_t waiters;
} cproc_event_t;

#define EVENT_FLAG 1u

typedef struct {
    PyObject_HEAD
    cproc_block blk;
    PyObject *weakreflist;
    cproc_event_t *e;
} EventObject;

static int event_init(EventObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ctx", NULL};
    PyObject *ctx = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$O:Event", kwlist, &ctx))
        return -1;
    if (self->blk.seg != NULL)
        return 0;
    if (cproc_block_new(&self->blk, CPROC_KIND_EVENT, sizeof(cproc_event_t)) < 0)
        return -1;
    self->e = self->blk.data;
    return 0;
}

static PyObject *event_from_handle(PyTypeObject *type, PyObject *handle)
{
    EventObject *self = (EventObject *)cproc_shared_attach(type, handle, CPROC_KIND_EVENT);
    if (self != NULL)
        self->e = self->blk.data;
    return (PyObject *)self;
}

typedef struct {
    cproc_event_t *e;
    uint32_t start;       /* the word when wait() began: flag clear */
} event_wait_ctx;

/* Done when the flag is set or a set() happened since we started. */
static int event_try(void *arg, uint32_t *seen)
{
    event_wait_ctx *ctx = arg;
    uint32_t w = atomic_load(&ctx->e->word);
    *seen = w;
    return (w & EVENT_FLAG) != 0 || w != ctx->start;
}

static PyObject *event_is_set(EventObject *self, PyObject *unused)
{
    (void)unused;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    return PyBool_FromLong((atomic_load(&self->e->word) & EVENT_FLAG) != 0);
}

static PyObject *event_set(EventObject *self, PyObject *unused)
{
    (void)unused;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    uint32_t w = atomic_load(&self->e->word);
    do {
        if (w & EVENT_FLAG)
            Py_RETURN_NONE;          /* already set: nobody sleeps on it */
    } while (!atomic_compare_exchange_weak(&self->e->word, &w, ((w >> 1) + 1) << 1 | EVENT_FLAG));
    cproc_wake_waiters(&self->e->word, &self->e->waiters, INT_MAX);
    Py_RETURN_NONE;
}

static PyObject *event_clear(EventObject *self, PyObject *unused)
{
    (void)unused;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    atomic_fetch_and(&self->e->word, ~EVENT_FLAG);
    Py_RETURN_NONE;
}

static PyObject *event_wait(EventObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    PyObject *timeout = Py_None;
    if (cproc_parse_optional_arg("wait", "timeout", args, nargs, kwnames, &timeout) < 0)
        return NULL;
    event_wait_ctx ctx = {self->e, atomic_load(&self->e->word)};
    if (ctx.start & EVENT_FLAG)
        Py_RETURN_TRUE;
    int64_t deadline;
    if (cproc_deadline_from_timeout(timeout, &deadline) < 0)
        return NULL;
    int r = cproc_wait(&self->e->word, &self->e->waiters, event_try, NULL, &ctx, deadline);
    if (r == CPROC_WAIT_ERROR)
        return NULL;
    return PyBool_FromLong((atomic_load(&self->e->word) & EVENT_FLAG) != 0);
}

#if PY_VERSION_HEX >= 0x030B0000
static PyObject *event_repr(EventObject *self)
{
    const char *state = self->blk.seg == NULL ? "uninitialised" : (atomic_load(&self->e->word) & EVENT_FLAG) ? "set" : "unset";
    return PyUnicode_FromFormat("<%s at %p %s>", short_type_name((PyObject *)self), (void *)self, state);
}
#endif

static PyObject *event_reduce(EventObject *self, PyObject *unused)
{
    (void)unused;
    return cproc_shared_reduce((PyObject *)self, NULL);
}

static PyMethodDef event_methods[] = {
    {"is_set", (PyCFunction)event_is_set, METH_NOARGS, "Return True if the flag is set."},
    {"set", (PyCFunction)event_set, METH_NOARGS, "Set the flag and wake every waiter."},
    {"clear", (PyCFunction)event_clear, METH_NOARGS, "Reset the flag."},
    {"wait", (PyCFunction)(void (*)(void))event_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout=None) -> bool\n\nBlock until the flag is set or the timeout passes; return the flag."},
    {"_from_handle", (PyCFunction)event_from_handle, METH_O | METH_CLASS, "Attach by handle."},
    {"__reduce__", (PyCFunction)event_reduce, METH_NOARGS, NULL},
    {NULL}
};

PyTypeObject cproc_EventType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cproc.synchronize.Event",
    .tp_basicsize = sizeof(EventObject),
    .tp_weaklistoffset = offsetof(EventObject, weakreflist),
    .tp_dealloc = (destructor)cproc_shared_dealloc,
#if PY_VERSION_HEX >= 0x030B0000     /* up to 3.10 multiprocessing's Event has object's repr */
    .tp_repr = (reprfunc)event_repr,
#endif
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Event(*, ctx=None)\n\nA flag in shared memory that processes can wait for.",
    .tp_methods = event_methods,
    .tp_init = (initproc)event_init,
    .tp_new = PyType_GenericNew,
};

/* ======================================================================== */
/* Condition                                                                 */
/* ======================================================================== */

/* Exact notification (multiprocessing's and threading's semantics): notify(n)
 * wakes min(n, waiting) of the processes waiting at that moment, never one
 * that starts waiting later (the notifier's own next wait() included).
 *
 * Waiters join a generation; they are counted by group, and the members of
 * a group are interchangeable (any member may take a signal given to it):
 *   done     generations < done_below: every member was notified;
 *   partial  [done_below, new_from): part_waiters members share part_signals
 *            untaken signals (part_signals < part_waiters, or both 0);
 *   new      [new_from, gen]: new_waiters members, none notified yet.
 * notify(n) gives signals to the partial group first, then turns the new group
 * into the partial one (bumping gen, so later waiters form a fresh new group);
 * a partial group whose members all hold signals becomes done. Everything is
 * guarded by the internal mutex m (mutex.c: a dead holder is taken over); waiters sleep on seq, which moves on whenever a waiter may have
 * become ready, and look at the groups without m only to decide whether to
 * sleep. models/condition.pml checks this protocol. */
typedef struct {
    cproc_mutex_t m;
    _Atomic uint32_t seq;
    _Atomic uint32_t sleepers;
    _Atomic uint64_t gen;
    _Atomic uint64_t done_below;
    _Atomic uint64_t new_from;
    _Atomic uint64_t part_signals;
    _Atomic uint64_t part_waiters;
    _Atomic uint64_t new_waiters;
} cproc_cond_t;

typedef struct {
    PyObject_HEAD
    cproc_block blk;
    PyObject *weakreflist;
    cproc_cond_t *c;
    PyObject *lock;
    int native;      /* lock is a cproc Lock/RLock: ownership and release in C */
} ConditionObject;

static int condition_set_lock(ConditionObject *self, PyObject *lock)
{
    /* As multiprocessing: any object with acquire() and release(); wait()
     * and notify() then need lock._semlock._is_mine() and _count(). */
    int native = PyObject_TypeCheck(lock, &cproc_SemLockType) &&
                 ((SemLockObject *)lock)->blk.seg != NULL &&
                 ((SemLockObject *)lock)->s->kind != CPROC_SEMAPHORE;
    Py_INCREF(lock);
    Py_XSETREF(self->lock, lock);
    self->native = native;
    return 0;
}

static int condition_init(ConditionObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"lock", NULL};
    PyObject *lock;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Condition", kwlist, &lock))
        return -1;
    if (condition_set_lock(self, lock) < 0)
        return -1;
    if (self->blk.seg != NULL)
        return 0;
    if (cproc_block_new(&self->blk, CPROC_KIND_CONDITION, sizeof(cproc_cond_t)) < 0)
        return -1;
    self->c = self->blk.data;
    return 0;
}

static PyObject *condition_from_handle(PyTypeObject *type, PyObject *args)
{
    PyObject *handle, *lock;
    if (!PyArg_ParseTuple(args, "OO:_from_handle", &handle, &lock))
        return NULL;
    ConditionObject *self = (ConditionObject *)cproc_shared_attach(type, handle, CPROC_KIND_CONDITION);
    if (self == NULL)
        return NULL;
    if (condition_set_lock(self, lock) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->c = self->blk.data;
    return (PyObject *)self;
}

static void condition_dealloc(ConditionObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    cproc_block_release(&self->blk);
    Py_CLEAR(self->lock);
    tp->tp_free((PyObject *)self);
}

/* 0, or -1 with the "not initialized" error. */
static int condition_check(ConditionObject *self)
{
    return cproc_check_init((PyObject *)self, self->blk.seg != NULL && self->lock != NULL);
}

/* Take an internal mutex, held only for a few instructions by anyone (or
 * taken over from a dead holder). Not interruptible: a signal handler's
 * exception, and one already pending, are kept for the caller. */
static void internal_lock(cproc_mutex_t *m)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    while (cproc_mutex_lock(m, CPROC_FOREVER, NULL) <= 0) {
        if (et == NULL)
            PyErr_Fetch(&et, &ev, &tb);
        else
            PyErr_Clear();
    }
    PyErr_Restore(et, ev, tb);
}

/* m held: a partial group whose members all hold signals is done. Returns 1
 * when the groups moved (sleepers must look again). */
static int cond_merge(cproc_cond_t *c)
{
    if (atomic_load(&c->part_signals) != atomic_load(&c->part_waiters))
        return 0;
    atomic_store(&c->part_signals, 0);
    atomic_store(&c->part_waiters, 0);
    uint64_t q = atomic_load(&c->new_from);
    if (atomic_load(&c->done_below) == q)
        return 0;
    atomic_store(&c->done_below, q);
    return 1;
}

/* m held: wake the sleepers after the groups moved (called last). */
static void cond_unlock(cproc_cond_t *c, int moved)
{
    if (moved)
        atomic_fetch_add(&c->seq, 1);
    cproc_mutex_unlock(&c->m);
    if (moved)
        cproc_wake_waiters(&c->seq, &c->sleepers, INT_MAX);
}

typedef struct {
    cproc_cond_t *c;
    uint64_t gen;
} cond_wait_ctx;

/* Without m: may this waiter have been notified? (m decides.) seq is read
 * first, so a change after this look ends the sleep at once. */
static int cond_peek(void *arg, uint32_t *seen)
{
    cond_wait_ctx *ctx = arg;
    cproc_cond_t *c = ctx->c;
    *seen = atomic_load(&c->seq);
    if (ctx->gen < atomic_load(&c->done_below))
        return 1;
    return ctx->gen < atomic_load(&c->new_from) && atomic_load(&c->part_signals) > 0;
}

/* m held: the waiter of generation g looks at its group. 1: notified (its
 * signal taken); 0: it left unnotified (give_up: timed out or interrupted);
 * -1: not notified yet, wait on. */
static int cond_settle(cproc_cond_t *c, uint64_t g, int give_up, int *moved)
{
    if (g < atomic_load(&c->done_below))
        return 1;
    if (g < atomic_load(&c->new_from)) {
        if (!give_up && atomic_load(&c->part_signals) > 0) {
            atomic_fetch_sub(&c->part_signals, 1);
            atomic_fetch_sub(&c->part_waiters, 1);
            return 1;
        }
        if (!give_up)
            return -1;
        /* Leave the signals to the other members; if they all hold one now,
         * the group is done. */
        atomic_fetch_sub(&c->part_waiters, 1);
        *moved = cond_merge(c);
        return 0;
    }
    if (!give_up)
        return -1;
    atomic_fetch_sub(&c->new_waiters, 1);
    return 0;
}

/* The user's lock: is it held by this thread, and how many times (a
 * native RLock's depth; multiprocessing's _semlock._count() otherwise).
 * *count 0 with no exception: not owned. */
static int cond_lock_count(ConditionObject *self, uint32_t *count)
{
    if (self->native) {
        SemLockObject *lock = (SemLockObject *)self->lock;
        *count = cproc_semlock_is_mine(lock->s) ? lock->s->count : 0;
        return 0;
    }
    PyObject *sem = PyObject_GetAttrString(self->lock, "_semlock");
    if (sem == NULL)
        return -1;
    PyObject *mine = PyObject_CallMethod(sem, "_is_mine", NULL);
    int is_mine = mine == NULL ? -1 : PyObject_IsTrue(mine);
    Py_XDECREF(mine);
    *count = 0;
    if (is_mine > 0) {
        PyObject *n = PyObject_CallMethod(sem, "_count", NULL);
        long v = n == NULL ? -1 : PyLong_AsLong(n);
        Py_XDECREF(n);
        if (v < 0 || v > UINT32_MAX) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "the lock's _count() is out of range");
            is_mine = -1;
        } else
            *count = (uint32_t)v;
    }
    Py_DECREF(sem);
    return is_mine < 0 ? -1 : 0;
}

/* Release the user's lock completely (count: what cond_lock_count gave). */
static int cond_release_user(ConditionObject *self, uint32_t count)
{
    if (self->native) {
        semlock_unlock(((SemLockObject *)self->lock)->s);
        return 0;
    }
    for (uint32_t i = 0; i < count; i++) {
        PyObject *r = PyObject_CallMethod(self->lock, "release", NULL);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* Take the user's lock back `count` times. Interruptions are held back
 * until we hold it again: wait() always returns with the lock held. */
static int cond_reacquire(ConditionObject *self, uint32_t count)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    int failed = 0;
    if (self->native) {
        SemLockObject *lock = (SemLockObject *)self->lock;
        for (;;) {
            if (cproc_semlock_acquire(lock, 1, CPROC_FOREVER) == 1)
                break;
            if (et == NULL)
                PyErr_Fetch(&et, &ev, &tb);
            else
                PyErr_Clear();
        }
        lock->s->count = count;
    } else {
        for (uint32_t i = 0; i < count; i++) {
            PyObject *r = PyObject_CallMethod(self->lock, "acquire", NULL);
            if (r == NULL) {
                failed = 1;
                if (et == NULL)
                    PyErr_Fetch(&et, &ev, &tb);
                else
                    PyErr_Clear();
                break;
            }
            Py_DECREF(r);
        }
    }
    PyErr_Restore(et, ev, tb);
    return et != NULL || failed ? -1 : 0;
}

static PyObject *condition_wait(ConditionObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (condition_check(self) < 0)
        return NULL;
    PyObject *timeout = Py_None;
    if (cproc_parse_optional_arg("wait", "timeout", args, nargs, kwnames, &timeout) < 0)
        return NULL;
    uint32_t count;
    if (cond_lock_count(self, &count) < 0)
        return NULL;
    if (count == 0) {
        PyErr_SetString(PyExc_AssertionError, "must acquire() condition before using wait()");
        return NULL;
    }
    int64_t deadline;
    if (cproc_deadline_from_timeout(timeout, &deadline) < 0)
        return NULL;
    cproc_cond_t *c = self->c;
    cond_wait_ctx ctx = {c, 0};
    internal_lock(&c->m);
    ctx.gen = atomic_load(&c->gen);
    atomic_fetch_add(&c->new_waiters, 1);
    cproc_mutex_unlock(&c->m);

    int notified, moved = 0;
    if (cond_release_user(self, count) < 0) {
        internal_lock(&c->m);
        notified = cond_settle(c, ctx.gen, 1, &moved);
        cond_unlock(c, moved);
        return NULL;
    }
    for (;;) {
        int r = cproc_wait(&c->seq, &c->sleepers, cond_peek, NULL, &ctx, deadline);
        internal_lock(&c->m);     /* keeps a KeyboardInterrupt pending */
        moved = 0;
        notified = cond_settle(c, ctx.gen, r != CPROC_WAIT_OK, &moved);
        cond_unlock(c, moved);
        if (notified >= 0)
            break;
    }
    if (cond_reacquire(self, count) < 0)
        return NULL;
    return PyBool_FromLong(notified);
}

static PyObject *cond_notify_n(ConditionObject *self, uint64_t n)
{
    if (condition_check(self) < 0)
        return NULL;
    uint32_t count;
    if (cond_lock_count(self, &count) < 0)
        return NULL;
    if (count == 0) {
        PyErr_SetString(PyExc_AssertionError, "lock is not owned");
        return NULL;
    }
    cproc_cond_t *c = self->c;
    internal_lock(&c->m);
    int moved = 0;
    uint64_t unsignalled = atomic_load(&c->part_waiters) - atomic_load(&c->part_signals);
    uint64_t k = unsignalled < n ? unsignalled : n;
    if (k > 0) {
        atomic_fetch_add(&c->part_signals, k);
        n -= k;
        moved = 1;
    }
    moved |= cond_merge(c);
    uint64_t wn = atomic_load(&c->new_waiters);
    if (n > 0 && wn > 0) {
        /* Here the partial group is empty: the new group takes its place. */
        uint64_t g = atomic_load(&c->gen) + 1;
        atomic_store(&c->gen, g);
        atomic_store(&c->part_waiters, wn);
        atomic_store(&c->part_signals, wn < n ? wn : n);
        atomic_store(&c->new_waiters, 0);
        atomic_store(&c->new_from, g);
        cond_merge(c);
        moved = 1;
    }
    cond_unlock(c, moved);
    Py_RETURN_NONE;
}

static PyObject *condition_notify(ConditionObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *nobj = NULL;
    if (cproc_parse_optional_arg("notify", "n", args, nargs, kwnames, &nobj) < 0)
        return NULL;
    long long n = 1;
    if (nobj != NULL) {
        n = PyLong_AsLongLong(nobj);
        if (n == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                return NULL;
            PyErr_Clear();     /* a huge n: everyone */
            n = LLONG_MAX;
        }
    }
    /* multiprocessing wakes nobody for n <= 0 (its loop does not run). */
    return cond_notify_n(self, n < 0 ? 0 : (uint64_t)n);
}

static PyObject *condition_notify_all(ConditionObject *self, PyObject *unused)
{
    (void)unused;
    return cond_notify_n(self, UINT64_MAX);
}

/* acquire/release/with: the lock's own (direct C calls for a native lock). */
static PyObject *condition_acquire(ConditionObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (condition_check(self) < 0)
        return NULL;
    if (self->native)
        return semlock_acquire((SemLockObject *)self->lock, args, nargs, kwnames);
    PyObject *meth = PyObject_GetAttrString(self->lock, "acquire");
    if (meth == NULL)
        return NULL;
    PyObject *r = PyObject_Vectorcall(meth, args, nargs, kwnames);
    Py_DECREF(meth);
    return r;
}

static PyObject *condition_release(ConditionObject *self, PyObject *unused)
{
    if (condition_check(self) < 0)
        return NULL;
    if (self->native)
        return semlock_release((SemLockObject *)self->lock, unused);
    return PyObject_CallMethod(self->lock, "release", NULL);
}

static PyObject *condition_enter(ConditionObject *self, PyObject *unused)
{
    if (condition_check(self) < 0)
        return NULL;
    if (self->native)
        return semlock_enter((SemLockObject *)self->lock, unused);
    return PyObject_CallMethod(self->lock, "__enter__", NULL);
}

static PyObject *condition_exit(ConditionObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (condition_check(self) < 0)
        return NULL;
    if (self->native)
        return semlock_exit((SemLockObject *)self->lock, args, nargs);
    PyObject *meth = PyObject_GetAttrString(self->lock, "__exit__");
    if (meth == NULL)
        return NULL;
    PyObject *r = PyObject_Vectorcall(meth, args, nargs, NULL);
    Py_DECREF(meth);
    return r;
}

static PyObject *condition_num_waiters(ConditionObject *self, PyObject *unused)
{
    (void)unused;
    if (condition_check(self) < 0)
        return NULL;
    cproc_cond_t *c = self->c;
    internal_lock(&c->m);
    uint64_t n = atomic_load(&c->part_waiters) - atomic_load(&c->part_signals) + atomic_load(&c->new_waiters);
    cproc_mutex_unlock(&c->m);
    return PyLong_FromUnsignedLongLong(n);
}

/* (waiters registered and not yet gone, in the partial and new groups;
 * signals given and not yet taken): what multiprocessing's _sleeping_count
 * and _wait_semaphore count (its _woken_count is the first minus the
 * waiters still owed a notification). */
static PyObject *condition_counts(ConditionObject *self, PyObject *unused)
{
    (void)unused;
    if (condition_check(self) < 0)
        return NULL;
    cproc_cond_t *c = self->c;
    internal_lock(&c->m);
    uint64_t registered = atomic_load(&c->part_waiters) + atomic_load(&c->new_waiters);
    uint64_t signals = atomic_load(&c->part_signals);
    cproc_mutex_unlock(&c->m);
    return Py_BuildValue("(KK)", (unsigned long long)registered, (unsigned long long)signals);
}

static PyObject *condition_reduce(ConditionObject *self, PyObject *unused)
{
    (void)unused;
    if (condition_check(self) < 0)
        return NULL;
    PyObject *extra = PyTuple_Pack(1, self->lock);
    if (extra == NULL)
        return NULL;
    PyObject *r = cproc_shared_reduce((PyObject *)self, extra);
    Py_DECREF(extra);
    return r;
}

static PyMethodDef condition_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))condition_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout=None) -> bool\n\nRelease the lock, sleep until notified or timed out, "
     "reacquire it; return whether we were notified."},
    {"notify", (PyCFunction)(void (*)(void))condition_notify, METH_FASTCALL | METH_KEYWORDS,
     "notify(n=1)\n\nWake up to n waiters."},
    {"notify_all", (PyCFunction)condition_notify_all, METH_NOARGS, "Wake every waiter."},
    {"acquire", (PyCFunction)(void (*)(void))condition_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(block=True, timeout=None) -> bool\n\nAcquire the underlying lock."},
    {"release", (PyCFunction)condition_release, METH_NOARGS, "Release the underlying lock."},
    {"__enter__", (PyCFunction)condition_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))condition_exit, METH_FASTCALL, NULL},
    {"_num_waiters", (PyCFunction)condition_num_waiters, METH_NOARGS, "Waiters not yet notified."},
    {"_counts", (PyCFunction)condition_counts, METH_NOARGS, "(registered waiters, untaken signals)."},
    {"_from_handle", (PyCFunction)condition_from_handle, METH_VARARGS | METH_CLASS, "Attach by handle."},
    {"__reduce__", (PyCFunction)condition_reduce, METH_NOARGS, NULL},
    {NULL}
};

static PyMemberDef condition_members[] = {
    {"_lock", T_OBJECT, offsetof(ConditionObject, lock), READONLY, "the underlying lock"},
    {NULL}
};

PyTypeObject cproc_ConditionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cproc._cproc.Condition",
    .tp_basicsize = sizeof(ConditionObject),
    .tp_weaklistoffset = offsetof(ConditionObject, weakreflist),
    .tp_dealloc = (destructor)condition_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Condition(lock)\n\nA condition variable in shared memory over a cproc Lock or RLock.",
    .tp_methods = condition_methods,
    .tp_members = condition_members,
    .tp_init = (initproc)condition_init,
    .tp_new = PyType_GenericNew,
};

/* ======================================================================== */
/* Barrier                                                                   */
/* ======================================================================== */

/* gen is the futex word: it moves on when a round is released or broken;
 * bit (g % 64) of broken_hist says whether round g ended broken, so a waiter
 * learns its own round's outcome even after reset() and later rounds ended
 * (models/barrier.pml), as long as fewer than 64 rounds ended since (more: it
 * is told broken). Fields other than gen and sleepers are guarded by the
 * internal lock m. */
typedef struct {
    cproc_mutex_t m;
    _Atomic uint32_t gen;
    _Atomic uint32_t sleepers;
    uint32_t parties;
    uint32_t count;       /* arrived in this round; == parties while the action runs */
    uint32_t broken;
    uint64_t broken_hist;
} cproc_barrier_t;

typedef struct {
    PyObject_HEAD
    cproc_block blk;
    PyObject *weakreflist;
    cproc_barrier_t *b;
    PyObject *action;
    PyObject *timeout;    /* default timeout for wait(), None or a number */
} BarrierObject;

static PyObject *BrokenBarrierError;

/* Take the internal lock (interruptible): 0, or -1 with an exception. */
static int barrier_lock(cproc_barrier_t *b)
{
    return cproc_mutex_lock(&b->m, CPROC_FOREVER, NULL) > 0 ? 0 : -1;
}

/* End the current round, released or broken, and start the next. */
static void barrier_next_gen(cproc_barrier_t *b, int broken)
{
    uint32_t g = atomic_load(&b->gen);
    uint64_t bit = UINT64_C(1) << (g % 64);
    b->broken_hist = broken ? b->broken_hist | bit : b->broken_hist & ~bit;
    g++;
    atomic_store(&b->gen, g == 0 ? 1 : g);
    b->count = 0;
}

/* m held: did round g end broken? */
static int barrier_round_broken(const cproc_barrier_t *b, uint32_t g)
{
    uint32_t ended = atomic_load(&b->gen) - g;    /* rounds ended since g began */
    if (ended == 0 || ended > 64)
        return ended != 0;
    return (b->broken_hist >> (g % 64)) & 1;
}

/* Break the current round: everyone waiting in it gets BrokenBarrierError. */
static void barrier_break_locked(cproc_barrier_t *b)
{
    b->broken = 1;
    barrier_next_gen(b, 1);
    cproc_futex_wake(&b->gen, INT_MAX);
}

typedef struct {
    cproc_barrier_t *b;
    uint32_t mygen;
} barrier_wait_ctx;

static int barrier_gen_try(void *arg, uint32_t *seen)
{
    barrier_wait_ctx *ctx = arg;
    uint32_t g = atomic_load(&ctx->b->gen);
    *seen = g;
    return g != ctx->mygen;
}

static PyObject *raise_broken(void)
{
    PyErr_SetNone(BrokenBarrierError);
    return NULL;
}

static int barrier_init(BarrierObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"parties", "action", "timeout", NULL};
    Py_ssize_t parties;
    PyObject *action = Py_None, *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|OO:Barrier", kwlist, &parties, &action, &timeout))
        return -1;
    if (parties < 1) {
        PyErr_SetString(PyExc_ValueError, "parties must be >= 1");
        return -1;
    }
    if (parties > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "too many parties");
        return -1;
    }
    if (timeout != Py_None) {
        int64_t unused;
        if (cproc_deadline_from_timeout(timeout, &unused) < 0)
            return -1;
    }
    if (self->blk.seg == NULL) {
        if (cproc_block_new(&self->blk, CPROC_KIND_BARRIER, sizeof(cproc_barrier_t)) < 0)
            return -1;
        self->b = self->blk.data;
        self->b->parties = (uint32_t)parties;
        atomic_store(&self->b->gen, 1);
    }
    Py_INCREF(action);
    Py_XSETREF(self->action, action);
    Py_INCREF(timeout);
    Py_XSETREF(self->timeout, timeout);
    return 0;
}

static PyObject *barrier_from_handle(PyTypeObject *type, PyObject *args)
{
    PyObject *handle, *action, *timeout;
    if (!PyArg_ParseTuple(args, "OOO:_from_handle", &handle, &action, &timeout))
        return NULL;
    BarrierObject *self = (BarrierObject *)cproc_shared_attach(type, handle, CPROC_KIND_BARRIER);
    if (self == NULL)
        return NULL;
    self->b = self->blk.data;
    Py_INCREF(action);
    self->action = action;
    Py_INCREF(timeout);
    self->timeout = timeout;
    return (PyObject *)self;
}

static void barrier_dealloc(BarrierObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    cproc_block_release(&self->blk);
    Py_CLEAR(self->action);
    Py_CLEAR(self->timeout);
    tp->tp_free((PyObject *)self);
}

/* Sleep until round `mygen` ends. 0 released, 1 timed out, -1 error. */
static int barrier_sleep(cproc_barrier_t *b, uint32_t mygen, int64_t deadline)
{
    barrier_wait_ctx ctx = {b, mygen};
    int r = cproc_wait(&b->gen, &b->sleepers, barrier_gen_try, NULL, &ctx, deadline);
    return r == CPROC_WAIT_OK ? 0 : r == CPROC_WAIT_TIMEOUT ? 1 : -1;
}

static PyObject *barrier_wait(BarrierObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    PyObject *timeout = Py_None;
    if (cproc_parse_optional_arg("wait", "timeout", args, nargs, kwnames, &timeout) < 0)
        return NULL;
    if (timeout == Py_None)
        timeout = self->timeout;
    int64_t deadline;
    if (cproc_deadline_from_timeout(timeout, &deadline) < 0)
        return NULL;

    cproc_barrier_t *b = self->b;
    if (barrier_lock(b) < 0)
        return NULL;
    /* While the previous round's action runs, newcomers wait for it to end. */
    while (!b->broken && b->count >= b->parties) {
        uint32_t g = atomic_load(&b->gen);
        cproc_mutex_unlock(&b->m);
        if (barrier_sleep(b, g, CPROC_FOREVER) < 0)
            return NULL;
        if (barrier_lock(b) < 0)
            return NULL;
    }
    if (b->broken) {
        cproc_mutex_unlock(&b->m);
        return raise_broken();
    }
    uint32_t index = b->count++;
    uint32_t mygen = atomic_load(&b->gen);

    if (b->count == b->parties) {
        /* Last to arrive: run the action, then release the round. */
        cproc_mutex_unlock(&b->m);
        PyObject *res = Py_None;
        if (self->action == Py_None)
            Py_INCREF(res);
        else
            res = PyObject_CallObject(self->action, NULL);
        if (barrier_lock(b) < 0) {
            Py_XDECREF(res);
            return NULL;
        }
        if (res == NULL) {
            if (atomic_load(&b->gen) == mygen)
                barrier_break_locked(b);
            cproc_mutex_unlock(&b->m);
            return NULL;
        }
        Py_DECREF(res);
        if (atomic_load(&b->gen) != mygen) {   /* aborted or reset while the action ran */
            cproc_mutex_unlock(&b->m);
            return raise_broken();
        }
        barrier_next_gen(b, 0);
        cproc_mutex_unlock(&b->m);
        cproc_futex_wake(&b->gen, INT_MAX);
        return PyLong_FromUnsignedLong(index);
    }
    cproc_mutex_unlock(&b->m);

    int r = barrier_sleep(b, mygen, deadline);
    if (r != 0) {
        /* Timed out or interrupted: break the round unless it just ended. */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        int locked = barrier_lock(b);
        if (locked == 0) {
            if (atomic_load(&b->gen) == mygen)
                barrier_break_locked(b);
            cproc_mutex_unlock(&b->m);
        } else
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        if (r < 0)
            return NULL;
    }
    if (barrier_lock(b) < 0)
        return NULL;
    int broken = barrier_round_broken(b, mygen);
    cproc_mutex_unlock(&b->m);
    if (broken)
        return raise_broken();
    return PyLong_FromUnsignedLong(index);
}

static PyObject *barrier_reset(BarrierObject *self, PyObject *unused)
{
    (void)unused;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    cproc_barrier_t *b = self->b;
    if (barrier_lock(b) < 0)
        return NULL;
    if (b->count > 0) {       /* those waiting now get BrokenBarrierError */
        barrier_next_gen(b, 1);
        cproc_futex_wake(&b->gen, INT_MAX);
    }
    b->broken = 0;
    cproc_mutex_unlock(&b->m);
    Py_RETURN_NONE;
}

static PyObject *barrier_abort(BarrierObject *self, PyObject *unused)
{
    (void)unused;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    cproc_barrier_t *b = self->b;
    if (barrier_lock(b) < 0)
        return NULL;
    barrier_break_locked(b);
    cproc_mutex_unlock(&b->m);
    Py_RETURN_NONE;
}

static PyObject *barrier_get_parties(BarrierObject *self, void *closure)
{
    (void)closure;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(self->b->parties);
}

static PyObject *barrier_get_n_waiting(BarrierObject *self, void *closure)
{
    (void)closure;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    uint32_t count = ((volatile cproc_barrier_t *)self->b)->count;
    return PyLong_FromUnsignedLong(count < self->b->parties ? count : 0);
}

static PyObject *barrier_get_broken(BarrierObject *self, void *closure)
{
    (void)closure;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    return PyBool_FromLong(((volatile cproc_barrier_t *)self->b)->broken != 0);
}

static PyObject *barrier_reduce(BarrierObject *self, PyObject *unused)
{
    (void)unused;
    if (cproc_check_shared((PyObject *)self) < 0)
        return NULL;
    PyObject *extra = PyTuple_Pack(2, self->action, self->timeout);
    if (extra == NULL)
        return NULL;
    PyObject *r = cproc_shared_reduce((PyObject *)self, extra);
    Py_DECREF(extra);
    return r;
}

static PyMethodDef barrier_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))barrier_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout=None) -> int\n\nWait until `parties` processes have called wait(); return this "
     "caller's arrival index (0 .. parties-1)."},
    {"reset", (PyCFunction)barrier_reset, METH_NOARGS, "Return the barrier to its empty state."},
    {"abort", (PyCFunction)barrier_abort, METH_NOARGS, "Put the barrier into the broken state."},
    {"_from_handle", (PyCFunction)barrier_from_handle, METH_VARARGS | METH_CLASS, "Attach by handle."},
    {"__reduce__", (PyCFunction)barrier_reduce, METH_NOARGS, NULL},
    {NULL}
};

static PyGetSetDef barrier_getset[] = {
    {"parties", (getter)barrier_get_parties, NULL, "number of processes to wait for", NULL},
    {"n_waiting", (getter)barrier_get_n_waiting, NULL, "number currently waiting", NULL},
    {"broken", (getter)barrier_get_broken, NULL, "whether the barrier is broken", NULL},
    {NULL}
};

static PyMemberDef barrier_members[] = {
    {"_action", T_OBJECT, offsetof(BarrierObject, action), READONLY, NULL},
    {"_timeout", T_OBJECT, offsetof(BarrierObject, timeout), READONLY, NULL},
    {NULL}
};

PyTypeObject cproc_BarrierType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cproc._cproc.Barrier",
    .tp_basicsize = sizeof(BarrierObject),
    .tp_weaklistoffset = offsetof(BarrierObject, weakreflist),
    .tp_dealloc = (destructor)barrier_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Barrier(parties, action=None, timeout=None)\n\nA barrier in shared memory.",
    .tp_methods = barrier_methods,
    .tp_getset = barrier_getset,
    .tp_members = barrier_members,
    .tp_init = (initproc)barrier_init,
    .tp_new = PyType_GenericNew,
};

int cproc_sync_init(PyObject *module)
{
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL)
        return -1;
    BrokenBarrierError = PyObject_GetAttrString(threading, "BrokenBarrierError");
    Py_DECREF(threading);
    if (BrokenBarrierError == NULL)
        return -1;
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
