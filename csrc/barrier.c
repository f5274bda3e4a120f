/* barrier.c — Barrier (multiprocessing.synchronize.Barrier, i.e.
 * threading.Barrier across processes; Python side: cproc/synchronize.py).
 *
 * Owns: the rounds of a barrier in shared memory (the futex word moves on
 * when a round ends, a 64-round record says which ended broken), wait with
 * its action and timeout, reset, abort, and pickling. Never calls into
 * Python (the action) while holding the internal mutex.
 */
#include "cproc.h"

#include <limits.h>
#include <structmember.h>

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

static PyObject *BrokenBarrierError;    /* threading.BrokenBarrierError */

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
    Py_CLEAR(self->action);
    Py_CLEAR(self->timeout);
    cproc_shared_dealloc((PyObject *)self);
}

/* Sleep until round `mygen` ends. 0 released, 1 timed out, -1 error. */
static int barrier_sleep(cproc_barrier_t *b, uint32_t mygen, int64_t deadline)
{
    barrier_wait_ctx ctx = {b, mygen};
    int r = cproc_wait(&b->gen, &b->sleepers, barrier_gen_try, NULL, &ctx, deadline, 0);
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

int cproc_barrier_init(PyObject *module)
{
    (void)module;
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL)
        return -1;
    BrokenBarrierError = PyObject_GetAttrString(threading, "BrokenBarrierError");
    Py_DECREF(threading);
    return BrokenBarrierError == NULL ? -1 : 0;
}
