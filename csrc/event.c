/* event.c — Event (multiprocessing.synchronize.Event; Python side:
 * cproc/synchronize.py).
 *
 * Owns: the event's word in shared memory (the flag and a count of set()
 * calls, so that a set() undone at once by clear() still wakes every
 * waiter), set/clear/wait, and pickling. models/event.pml checks it.
 */
#include "cproc.h"

#include <limits.h>
#include <stddef.h>

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
    int r = cproc_wait(&self->e->word, &self->e->waiters, event_try, NULL, &ctx, deadline, 0);
    if (r == CPROC_WAIT_ERROR)
        return NULL;
    return PyBool_FromLong((atomic_load(&self->e->word) & EVENT_FLAG) != 0);
}

#if PY_VERSION_HEX >= 0x030B0000
static PyObject *event_repr(EventObject *self)
{
    const char *state = self->blk.seg == NULL ? "uninitialised" : (atomic_load(&self->e->word) & EVENT_FLAG) ? "set" : "unset";
    return PyUnicode_FromFormat("<%s at %p %s>", cproc_short_type_name((PyObject *)self), (void *)self, state);
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
