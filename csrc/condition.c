/* condition.c — Condition (multiprocessing.synchronize.Condition; Python
 * side: cproc/synchronize.py) over a cproc Lock/RLock or any lock object.
 *
 * Owns: the exact-notification protocol (notify(n) wakes n of those waiting
 * at that moment, never a later one) in shared memory, releasing and taking
 * back the user's lock around a wait (in C for a cproc lock, through its
 * methods otherwise), forwarding acquire/release to the lock, and pickling.
 * Never calls into Python while holding the internal mutex.
 */
#include "cproc.h"

#include <limits.h>
#include <structmember.h>

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
 * guarded by the internal mutex m (mutex.c: a dead holder is taken over);
 * waiters sleep on seq, which moves on whenever a waiter may have become
 * ready, and look at the groups without m only to decide whether to sleep. models/condition.pml checks this protocol. */
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
    Py_CLEAR(self->lock);
    cproc_shared_dealloc((PyObject *)self);
}

/* 0, or -1 with the "not initialized" error. */
static int condition_check(ConditionObject *self)
{
    return cproc_check_init((PyObject *)self, self->blk.seg != NULL && self->lock != NULL);
}

/* Keep the first exception raised in (*et, *ev, *tb) (empty: none yet);
 * drop the one set now if there is one already. */
static void keep_first_error(PyObject **et, PyObject **ev, PyObject **tb)
{
    if (*et == NULL)
        PyErr_Fetch(et, ev, tb);
    else
        PyErr_Clear();
}

/* Take an internal mutex, held only for a few instructions by anyone (or
 * taken over from a dead holder). Not interruptible: a signal handler's
 * exception, and one already pending, are kept for the caller. */
static void internal_lock(cproc_mutex_t *m)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    while (cproc_mutex_lock(m, CPROC_FOREVER, NULL) <= 0)
        keep_first_error(&et, &ev, &tb);
    PyErr_Restore(et, ev, tb);
}

/* The user lock's method `name` (a lock that is not a cproc Lock/RLock). */
static PyObject *call_lock(ConditionObject *self, const char *name, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    PyObject *meth = PyObject_GetAttrString(self->lock, name);
    if (meth == NULL)
        return NULL;
    PyObject *r = PyObject_Vectorcall(meth, args, nargs, kwnames);
    Py_DECREF(meth);
    return r;
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

/* 0 with *count > 0 when this thread holds the user's lock; else -1 with
 * AssertionError(message) (or the error that asking the lock raised). */
static int cond_check_owned(ConditionObject *self, uint32_t *count, const char *message)
{
    if (cond_lock_count(self, count) < 0)
        return -1;
    if (*count > 0)
        return 0;
    PyErr_SetString(PyExc_AssertionError, message);
    return -1;
}

/* Release the user's lock completely (count: what cond_lock_count gave). */
static int cond_release_user(ConditionObject *self, uint32_t count)
{
    if (self->native) {
        cproc_semlock_unlock(((SemLockObject *)self->lock)->s);
        return 0;
    }
    for (uint32_t i = 0; i < count; i++) {
        PyObject *r = call_lock(self, "release", NULL, 0, NULL);
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
        while (cproc_semlock_acquire(lock, 1, CPROC_FOREVER) != 1)
            keep_first_error(&et, &ev, &tb);
        lock->s->count = count;
    } else {
        for (uint32_t i = 0; i < count; i++) {
            PyObject *r = call_lock(self, "acquire", NULL, 0, NULL);
            if (r == NULL) {
                failed = 1;
                keep_first_error(&et, &ev, &tb);
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
    if (cond_check_owned(self, &count, "must acquire() condition before using wait()") < 0)
        return NULL;
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
        int r = cproc_wait(&c->seq, &c->sleepers, cond_peek, NULL, &ctx, deadline, 0);
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
    if (cond_check_owned(self, &count, "lock is not owned") < 0)
        return NULL;
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
        return cproc_semlock_acquire_method((SemLockObject *)self->lock, args, nargs, kwnames);
    return call_lock(self, "acquire", args, nargs, kwnames);
}

static PyObject *condition_release(ConditionObject *self, PyObject *unused)
{
    (void)unused;
    if (condition_check(self) < 0)
        return NULL;
    if (self->native)
        return cproc_semlock_release_method((SemLockObject *)self->lock, NULL);
    return call_lock(self, "release", NULL, 0, NULL);
}

static PyObject *condition_enter(ConditionObject *self, PyObject *unused)
{
    (void)unused;
    if (condition_check(self) < 0)
        return NULL;
    if (self->native)
        return cproc_semlock_acquire_method((SemLockObject *)self->lock, NULL, 0, NULL);
    return call_lock(self, "__enter__", NULL, 0, NULL);
}

static PyObject *condition_exit(ConditionObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (condition_check(self) < 0)
        return NULL;
    if (self->native)
        return cproc_semlock_release_method((SemLockObject *)self->lock, NULL);
    return call_lock(self, "__exit__", args, nargs, NULL);
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
