/* queue.c — the Python types Queue, JoinableQueue and SimpleQueue on a
 * queue in shared memory (channel.c: the header, put and take; record.c:
 * the records; ring.c: the ring; qlock.c: the lock and its crash repair).
 *
 * Owns what only the Python objects have: argument parsing and the errors
 * multiprocessing raises (queue.Full, queue.Empty, closed queues), records
 * that a failed get_many left behind (pending), JoinableQueue's task_done()
 * and join(), SimpleQueue's _reader/_writer and its watch pipe, the tests'
 * hooks (_ring_info, _die_at), and handles: a queue pickles to its memfd's
 * handle (shm.c's scheme) and is attached by _from_handle.
 */
#include "cproc.h"

#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    PyObject_HEAD
    cproc_channel ch;                   /* ch.hdr NULL until initialised */
    int closed;
    pid_t put_pid;                      /* the last process that put through this object */
    int kind;                           /* CPROC_Q_* */
    PyObject *pending;                  /* list of popped records a failed get_many left */
    PyObject *reader;                   /* SimpleQueue._reader, made on first use */
    PyObject *weakreflist;
} QueueObject;

static PyObject *Empty, *Full;          /* queue.Empty, queue.Full (imported on first use) */

/* Raise queue.Empty or queue.Full (which), importing the queue module the first
 * time: a process that never times out a get or fills a queue never imports it. */
static void raise_empty_or_full(PyObject **which)
{
    static const cproc_import_name names[] = {
        {"queue", "Empty", &Empty}, {"queue", "Full", &Full}, {NULL}};
    if (cproc_import_names(names) == 0)
        PyErr_SetNone(*which);
}

/* ---- the checks ---------------------------------------------------------- */


static int check_ready(QueueObject *q)
{
    return cproc_check_init((PyObject *)q, q->ch.hdr != NULL);
}

static int check_open(QueueObject *q)
{
    if (check_ready(q) < 0)
        return -1;
    if (!q->closed)
        return 0;
    if (q->kind == CPROC_Q_SIMPLE)
        PyErr_SetString(PyExc_OSError, "handle is closed");
    else
        PyErr_Format(PyExc_ValueError, "Queue %R is closed", (PyObject *)q);
    return -1;
}


/* put: 0, or -1 with queue.Full or the error set. */
static int put_messages(QueueObject *q, cproc_message *msgs, Py_ssize_t n, int blocking, int64_t deadline)
{
    int r = cproc_channel_put(&q->ch, msgs, n, blocking, deadline);
    if (r < 0)
        return -1;
    if (r > 0) {
        raise_empty_or_full(&Full);
        return -1;
    }
    q->put_pid = cproc_pid;
    return 0;
}

/* ---- records a failed get_many left behind ------------------------------ */

/* Put popped records back in front of q->pending, as (kind, data, buffers). */
static int pending_push_front(QueueObject *q, cproc_popped *p, Py_ssize_t n)
{
    if (n == 0)
        return 0;
    if (q->pending == NULL && (q->pending = PyList_New(0)) == NULL)
        return -1;
    PyObject *items = PyList_New(n);
    if (items == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *bufs = PyTuple_New(p[i].nbuf);
        for (uint32_t k = 0; bufs != NULL && k < p[i].nbuf; k++)
            PyTuple_SET_ITEM(bufs, k, Py_NewRef(p[i].buffers[k]));
        PyObject *t = bufs ? Py_BuildValue("(ION)", p[i].kind, p[i].data, bufs) : NULL;
        if (t == NULL) {
            Py_DECREF(items);
            return -1;
        }
        PyList_SET_ITEM(items, i, t);
    }
    int r = PyList_SetSlice(q->pending, 0, 0, items);
    Py_DECREF(items);
    return r;
}

/* Take up to `max` records from q->pending into a new popped array. */
static cproc_popped *pending_take(QueueObject *q, Py_ssize_t max, Py_ssize_t *n)
{
    Py_ssize_t have = PyList_GET_SIZE(q->pending);
    *n = have < max ? have : max;
    cproc_popped *p = PyMem_Calloc((size_t)*n, sizeof(cproc_popped));
    if (p == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        PyObject *t = PyList_GET_ITEM(q->pending, i);
        p[i].kind = (uint32_t)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(t, 0));
        p[i].data = Py_NewRef(PyTuple_GET_ITEM(t, 1));
        PyObject *bufs = PyTuple_GET_ITEM(t, 2);
        p[i].nbuf = (uint32_t)PyTuple_GET_SIZE(bufs);
        if (p[i].nbuf > 0) {
            p[i].buffers = PyMem_Calloc(p[i].nbuf, sizeof(PyObject *));
            if (p[i].buffers == NULL) {
                p[i].nbuf = 0;
                PyErr_NoMemory();
                for (Py_ssize_t j = 0; j <= i; j++)
                    cproc_popped_clear(&p[j]);
                PyMem_Free(p);
                return NULL;
            }
            for (uint32_t k = 0; k < p[i].nbuf; k++)
                p[i].buffers[k] = Py_NewRef(PyTuple_GET_ITEM(bufs, k));
        }
    }
    if (PyList_SetSlice(q->pending, 0, *n, NULL) < 0) {
        for (Py_ssize_t i = 0; i < *n; i++)
            cproc_popped_clear(&p[i]);
        PyMem_Free(p);
        return NULL;
    }
    return p;
}

/* Decode n popped records: the object (want_list 0, n == 1) or a list. When
 * one fails to unpickle, the objects before it are returned and the failing
 * record and the rest wait in q->pending; the next get raises its error.
 * Nothing taken from the shared queue is ever dropped. Frees p. */
static PyObject *decode_all(QueueObject *q, cproc_popped *p, Py_ssize_t n, int want_list)
{
    PyObject *result = want_list ? PyList_New(0) : NULL;
    Py_ssize_t i = 0;
    if (want_list && result == NULL)
        goto done;
    for (; i < n; i++) {
        PyObject *obj = cproc_popped_decode(&p[i]);
        if (obj == NULL) {
            if (want_list && PyList_GET_SIZE(result) > 0) {
                PyErr_Clear();
                if (pending_push_front(q, p + i, n - i) < 0)
                    Py_CLEAR(result);
            } else {
                PyObject *et, *ev, *tb;
                PyErr_Fetch(&et, &ev, &tb);
                if (pending_push_front(q, p + i + 1, n - i - 1) < 0) {
                    Py_XDECREF(et);
                    Py_XDECREF(ev);
                    Py_XDECREF(tb);
                } else
                    PyErr_Restore(et, ev, tb);
                Py_CLEAR(result);
            }
            goto done;
        }
        if (!want_list) {
            result = obj;
            continue;
        }
        int r = PyList_Append(result, obj);
        Py_DECREF(obj);
        if (r < 0) {
            Py_CLEAR(result);
            goto done;
        }
    }
done:
    for (Py_ssize_t j = 0; j < n; j++)
        cproc_popped_clear(&p[j]);
    PyMem_Free(p);
    return result;
}

static PyObject *take(QueueObject *q, Py_ssize_t max, int blocking, int64_t deadline, int want_list)
{
    if (q->pending != NULL && PyList_GET_SIZE(q->pending) > 0) {
        Py_ssize_t n;
        cproc_popped *p = pending_take(q, max, &n);
        return p ? decode_all(q, p, n, want_list) : NULL;
    }
    cproc_popped *out;
    Py_ssize_t n;
    int r = cproc_channel_take(&q->ch, max, blocking, deadline, NULL, NULL, NULL, &out, &n);
    if (r > 0)
        raise_empty_or_full(&Empty);
    return r == 0 ? decode_all(q, out, n, want_list) : NULL;
}

/* ---- methods ------------------------------------------------------------- */

static PyObject *put_one(QueueObject *self, PyObject *obj, int blocking, int64_t deadline)
{
    if (check_open(self) < 0)
        return NULL;
    cproc_message m;
    if (cproc_message_init(&m, obj, NULL) < 0)
        return NULL;
    int r = put_messages(self, &m, 1, blocking, deadline);
    cproc_message_clear(&m);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *queue_put(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"obj", "block", "timeout", NULL};
    PyObject *a[3];
    int blocking;
    int64_t deadline;
    if (cproc_parse_args("put", args, nargs, kwnames, names, 1, a) < 0 ||
        cproc_block_timeout(a[1], a[2], 0, &blocking, &deadline) < 0)
        return NULL;
    return put_one(self, a[0], blocking, deadline);
}

static PyObject *queue_put_many(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"iterable", "block", "timeout", NULL};
    PyObject *a[3];
    int blocking;
    int64_t deadline;
    if (cproc_parse_args("put_many", args, nargs, kwnames, names, 1, a) < 0 ||
        cproc_block_timeout(a[1], a[2], 0, &blocking, &deadline) < 0 || check_open(self) < 0)
        return NULL;
    PyObject *items = PySequence_Fast(a[0], "put_many() argument must be iterable");
    if (items == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    int32_t maxsize = self->ch.hdr->maxsize;
    if (maxsize > 0 && n > maxsize) {
        PyErr_Format(PyExc_ValueError, "put_many() of %zd items can never fit a queue of maxsize %d",
                     n, (int)maxsize);
        Py_DECREF(items);
        return NULL;
    }
    cproc_message *msgs = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(cproc_message));
    int r = msgs == NULL ? (PyErr_NoMemory(), -1) : 0;
    Py_ssize_t ready = 0;               /* messages initialised (a failed one clears itself) */
    while (r == 0 && ready < n && cproc_message_init(&msgs[ready], PySequence_Fast_GET_ITEM(items, ready), NULL) == 0)
        ready++;
    if (r == 0 && ready < n)
        r = -1;
    if (r == 0 && n > 0)
        r = put_messages(self, msgs, n, blocking, deadline);
    for (Py_ssize_t i = 0; i < ready; i++)
        cproc_message_clear(&msgs[i]);
    PyMem_Free(msgs);
    Py_DECREF(items);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *queue_get(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout", NULL};
    PyObject *a[2];
    int blocking;
    int64_t deadline;
    if (cproc_parse_args("get", args, nargs, kwnames, names, 0, a) < 0 ||
        cproc_block_timeout(a[0], a[1], CPROC_BLOCK_GET, &blocking, &deadline) < 0 || check_open(self) < 0)
        return NULL;
    return take(self, 1, blocking, deadline, 0);
}

static PyObject *queue_get_nowait(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    return take(self, 1, 0, 0, 0);
}

static PyObject *queue_get_many(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"max_items", "block", "timeout", NULL};
    PyObject *a[3];
    int blocking;
    int64_t deadline;
    if (cproc_parse_args("get_many", args, nargs, kwnames, names, 1, a) < 0)
        return NULL;
    Py_ssize_t max = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
    if (max == -1 && PyErr_Occurred())
        return NULL;
    if (max < 1) {
        PyErr_SetString(PyExc_ValueError, "max_items must be at least 1");
        return NULL;
    }
    if (cproc_block_timeout(a[1], a[2], CPROC_BLOCK_GET, &blocking, &deadline) < 0 || check_open(self) < 0)
        return NULL;
    return take(self, max, blocking, deadline, 1);
}

static PyObject *simplequeue_get(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    return take(self, 1, 1, CPROC_FOREVER, 0);
}

static PyObject *simplequeue_put(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"obj", NULL};
    PyObject *obj;
    if (cproc_parse_args("put", args, nargs, kwnames, names, 1, &obj) < 0 || check_open(self) < 0)
        return NULL;
    return put_one(self, obj, 0, 0);
}

static PyObject *queue_put_nowait(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"obj", NULL};
    PyObject *obj;
    if (cproc_parse_args("put_nowait", args, nargs, kwnames, names, 1, &obj) < 0)
        return NULL;
    return put_one(self, obj, 0, 0);
}

static PyObject *queue_qsize(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_ready(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(atomic_load(&self->ch.hdr->count));
}

static PyObject *queue_empty(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if ((self->kind == CPROC_Q_SIMPLE ? check_open(self) : check_ready(self)) < 0)
        return NULL;
    /* multiprocessing: a put starts the process's feeder thread, which closes
     * the reader once close() stops it; empty() then polls a closed handle */
    if (self->closed && self->put_pid == cproc_pid) {
        PyErr_SetString(PyExc_OSError, "handle is closed");
        return NULL;
    }
    int has_pending = self->pending != NULL && PyList_GET_SIZE(self->pending) > 0;
    return PyBool_FromLong(atomic_load(&self->ch.hdr->count) == 0 && !has_pending);
}

static PyObject *queue_full(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_ready(self) < 0)
        return NULL;
    int32_t maxsize = self->ch.hdr->maxsize;
    return PyBool_FromLong(maxsize > 0 && atomic_load(&self->ch.hdr->count) >= (uint64_t)maxsize);
}

static PyObject *queue_close(QueueObject *self, PyObject *unused)
{
    (void)unused;
    self->closed = 1;
    if (self->reader != NULL) {         /* as multiprocessing's close() closes _reader */
        PyObject *r = PyObject_CallMethod(self->reader, "close", NULL);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    Py_RETURN_NONE;
}

/* ---- the watcher (SimpleQueue._reader, cproc.queues._QueueReader) -------- */

/* Stop the puts writing to our pipe, if it is still the registered one. */
static int queue_unwatch(QueueObject *q)
{
    return q->ch.hdr == NULL ? 0 : cproc_channel_unwatch(&q->ch);
}

static PyObject *queue_watch(QueueObject *self, PyObject *args)
{
    PyObject *wobj, *robj;
    int wfd, rfd;
    if (!PyArg_ParseTuple(args, "OO:_watch", &wobj, &robj))
        return NULL;
    if (check_open(self) < 0 || (wfd = PyObject_AsFileDescriptor(wobj)) < 0 ||
        (rfd = PyObject_AsFileDescriptor(robj)) < 0)
        return NULL;
    if (cproc_channel_watch(&self->ch, wfd, rfd) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *queue_watch_sync(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    if (cproc_channel_watch_poll_sync(&self->ch) < 0)   /* releases the GIL if it must wait */
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *queue_unwatch_method(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (queue_unwatch(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* cproc.queues.<name>(self, closed) */
static PyObject *queue_end(QueueObject *self, const char *name)
{
    PyObject *mod = PyImport_ImportModule("cproc.queues");
    if (mod == NULL)
        return NULL;
    PyObject *end = PyObject_CallMethod(mod, name, "OO", (PyObject *)self, self->closed ? Py_True : Py_False);
    Py_DECREF(mod);
    return end;
}

static PyObject *queue_get_reader(QueueObject *self, void *closure)
{
    (void)closure;
    if (self->reader == NULL) {
        if (self->closed)               /* as multiprocessing's: a closed Connection */
            return queue_end(self, "_QueueReader");
        PyObject *reader = queue_end(self, "_QueueReader");
        if (reader == NULL)
            return NULL;
        if (self->reader != NULL)       /* made meanwhile by another thread */
            Py_DECREF(reader);
        else
            self->reader = reader;
    }
    return Py_NewRef(self->reader);
}

/* SimpleQueue._writer: only its `closed` (multiprocessing's is the pipe's
 * write end; put() is the way to write). */
static PyObject *queue_get_writer(QueueObject *self, void *closure)
{
    (void)closure;
    return queue_end(self, "_QueueWriter");
}

static PyGetSetDef simple_getset[] = {
    {"_writer", (getter)queue_get_writer, NULL,
     "The write end as multiprocessing's SimpleQueue has it: `closed` tells whether close() ran.",
     NULL},
    {"_reader", (getter)queue_get_reader, NULL,
     "A connection-like reader that multiprocessing.connection.wait() can wait on: readable "
     "when the queue holds an item; recv() is get() (as multiprocessing's SimpleQueue._reader).",
     NULL},
    {NULL}
};

static PyObject *queue_join_thread(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (!self->closed) {
        PyErr_Format(PyExc_AssertionError, "Queue %R not closed", (PyObject *)self);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *queue_cancel_join_thread(QueueObject *self, PyObject *unused)
{
    (void)self; (void)unused;
    Py_RETURN_NONE;
}

static PyObject *queue_task_done(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_ready(self) < 0)
        return NULL;
    cproc_queue_header *h = self->ch.hdr;
    uint32_t v = atomic_load(&h->unfinished);
    do {
        if (v == 0) {
            PyErr_SetString(PyExc_ValueError, "task_done() called too many times");
            return NULL;
        }
    } while (!atomic_compare_exchange_weak(&h->unfinished, &v, v - 1));
    if (v == 1) {
        atomic_fetch_add(&h->zeros, 1);
        cproc_wake_waiters(&h->zeros, &h->join_waiters, INT_MAX);
    }
    Py_RETURN_NONE;
}

/* join() is done when no task is unfinished, or when the count reached 0
 * since it began (a put may have raised it again before we slept: sleeping
 * on the count itself would miss that moment, models/join.pml). */
typedef struct {
    cproc_queue_header *h;
    uint32_t zeros;       /* h->zeros when join() began */
} join_ctx;

static int try_join(void *arg, uint32_t *seen)
{
    join_ctx *ctx = arg;
    *seen = atomic_load(&ctx->h->zeros);
    return *seen != ctx->zeros || atomic_load(&ctx->h->unfinished) == 0;
}

static PyObject *queue_join(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_ready(self) < 0)
        return NULL;
    join_ctx ctx = {self->ch.hdr, atomic_load(&self->ch.hdr->zeros)};
    uint32_t seen;
    if (!try_join(&ctx, &seen) &&
        cproc_wait(&self->ch.hdr->zeros, &self->ch.hdr->join_waiters, try_join, NULL, &ctx,
                   CPROC_FOREVER, 0) != CPROC_WAIT_OK)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- the Pool's transport (pool.c, channel.c) -------------------------- */

cproc_channel *cproc_queue_channel(PyObject *queue)
{
    if (!PyObject_TypeCheck(queue, &cproc_QueueType) && !PyObject_TypeCheck(queue, &cproc_SimpleQueueType)) {
        PyErr_SetString(PyExc_TypeError, "a cproc queue is required");
        return NULL;
    }
    QueueObject *q = (QueueObject *)queue;
    return check_open(q) < 0 ? NULL : &q->ch;
}

static PyObject *queue_ring_info(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_ready(self) < 0)
        return NULL;
    cproc_queue_header *h = self->ch.hdr;
    if (cproc_qlock_acquire(&self->ch, CPROC_FOREVER) < 0)
        return NULL;
    cproc_ring_desc *r = cproc_ring_now(&self->ch.ring);
    int spill_in_use;
    uint64_t spill_warm;
    cproc_spill_usage(h->spill, &spill_in_use, &spill_warm);
    PyObject *d = Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:I,s:i,s:i,s:K}", "capacity", (unsigned long long)r->capacity,
                                "peak", (unsigned long long)h->ring.peak,
                                "used", (unsigned long long)(r->tail - r->head),
                                "ring_offset", (unsigned long long)r->off,
                                "count", (unsigned long long)atomic_load(&h->count),
                                "generation", atomic_load(&h->ring.gen),
                                "spill_blocks", CPROC_SPILL_SLOTS,
                                "spill_blocks_in_use", spill_in_use,
                                "spill_kept_bytes", (unsigned long long)spill_warm);
    cproc_qlock_release(&self->ch);
    return d;
}

static PyObject *queue_die_at(QueueObject *self, PyObject *args)
{
    (void)self;
    const char *name;
    int signum = SIGKILL;
    if (!PyArg_ParseTuple(args, "s|i:_die_at", &name, &signum))
        return NULL;
    for (int i = 0; cproc_die_point_names[i] != NULL; i++)
        if (strcmp(name, cproc_die_point_names[i]) == 0) {
            cproc_die_at = i;
            cproc_die_signal = signum;
            Py_RETURN_NONE;
        }
    PyErr_Format(PyExc_ValueError, "no crash point '%s'", name);
    return NULL;
}

/* ---- creating, attaching, pickling -------------------------------------- */

static int kind_of_type(PyTypeObject *type);

static void queue_release(QueueObject *q)
{
    if (queue_unwatch(q) < 0)
        PyErr_WriteUnraisable((PyObject *)q);
    cproc_channel_release(&q->ch);
    q->closed = 0;
    q->put_pid = 0;
    Py_CLEAR(q->pending);
    Py_CLEAR(q->reader);
}

static int queue_create(QueueObject *q, int32_t maxsize)
{
    queue_release(q);
    return cproc_channel_create(&q->ch, maxsize, (uint32_t)q->kind);
}

static PyObject *queue_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args; (void)kwds;
    QueueObject *q = (QueueObject *)type->tp_alloc(type, 0);
    if (q == NULL)
        return NULL;
    cproc_channel_zero(&q->ch);
    q->kind = kind_of_type(type);
    return (PyObject *)q;
}

static int queue_init(QueueObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"maxsize", "ctx", NULL};
    PyObject *maxsize = NULL, *ctx = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$O:Queue", kwlist, &maxsize, &ctx))
        return -1;
    int value = 0;
    if (maxsize != NULL) {
        /* as multiprocessing: "maxsize <= 0" first, then BoundedSemaphore(maxsize) */
        PyObject *zero = PyLong_FromLong(0);
        int le = zero ? PyObject_RichCompareBool(maxsize, zero, Py_LE) : -1;
        Py_XDECREF(zero);
        if (le < 0 || (!le && cproc_semlock_int_arg(maxsize, &value) < 0))
            return -1;
    }
    return queue_create(self, (int32_t)value);
}

static int simplequeue_init(QueueObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ctx", NULL};
    PyObject *ctx = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$O:SimpleQueue", kwlist, &ctx))
        return -1;
    return queue_create(self, 0);
}

static void queue_dealloc(QueueObject *self)
{
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    queue_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* handle = the memfd part of shm.c's handles (CPROC_MEMFD_FMT). */
static PyObject *queue_reduce(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_ready(self) < 0)
        return NULL;
    PyObject *ctor = PyObject_GetAttrString((PyObject *)Py_TYPE(self), "_from_handle");
    if (ctor == NULL)
        return NULL;
    return Py_BuildValue("(N((" CPROC_MEMFD_FMT ")))", ctor, CPROC_MEMFD_HANDLE_ARGS(&self->ch.mem));
}

static PyObject *queue_from_handle(PyTypeObject *type, PyObject *handle)
{
    cproc_memfd_ref ref;
    if (!PyTuple_Check(handle) ||
        !PyArg_ParseTuple(handle, CPROC_MEMFD_FMT ";invalid cproc queue handle", CPROC_MEMFD_REF_PTRS(&ref))) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "invalid cproc queue handle");
        return NULL;
    }
    QueueObject *q = (QueueObject *)queue_new(type, NULL, NULL);
    if (q == NULL)
        return NULL;
    if (cproc_channel_attach(&q->ch, &ref, (uint32_t)q->kind) < 0) {
        Py_DECREF(q);
        return NULL;
    }
    return (PyObject *)q;
}

/* ---- types --------------------------------------------------------------- */

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)

#define COMMON_METHODS                                                                           \
    {"empty", (PyCFunction)queue_empty, METH_NOARGS, "empty($self, /)\n--\n\n" "Return True if the queue is empty."},     \
    {"close", (PyCFunction)queue_close, METH_NOARGS,                                            \
     "close($self, /)\n--\n\n" "Close this process's end of the queue; what was put stays for the others."},              \
    {"_from_handle", (PyCFunction)queue_from_handle, METH_O | METH_CLASS,                       \
     "Attach the queue a handle names (used by unpickling)."},                                  \
    {"_ring_info", (PyCFunction)queue_ring_info, METH_NOARGS, "Sizes of the ring (for tests)."}, \
    {"_die_at", (PyCFunction)queue_die_at, METH_VARARGS, "Arm a crash point in this process (for tests)."}, \
    {"__reduce__", (PyCFunction)queue_reduce, METH_NOARGS, NULL}

#define QUEUE_METHODS                                                                            \
    {"put", (PyCFunction)(void (*)(void))queue_put, FASTKW,                                     \
     "put(obj, block=True, timeout=None)\n--\n\nPickle obj in the caller and add it to the queue; " \
     "queue.Full if a bounded queue stays full."},                                              \
    {"get", (PyCFunction)(void (*)(void))queue_get, FASTKW,                                     \
     "get(block=True, timeout=None)\n--\n\nRemove and return the oldest item; queue.Empty on timeout."}, \
    {"put_nowait", (PyCFunction)(void (*)(void))queue_put_nowait, FASTKW,                       \
     "put_nowait($self, /, obj)\n--\n\nput(obj, False)"},                                      \
    {"get_nowait", (PyCFunction)queue_get_nowait, METH_NOARGS, "get_nowait($self, /)\n--\n\nget(False)"}, \
    {"put_many", (PyCFunction)(void (*)(void))queue_put_many, FASTKW,                           \
     "put_many(iterable, block=True, timeout=None)\n--\n\nAdd all items at once, or none of them."}, \
    {"get_many", (PyCFunction)(void (*)(void))queue_get_many, FASTKW,                           \
     "get_many(max_items, block=True, timeout=None)\n--\n\n"                                    \
     "Remove and return a list of 1 to max_items oldest items; queue.Empty on timeout."},       \
    {"qsize", (PyCFunction)queue_qsize, METH_NOARGS, "qsize($self, /)\n--\n\n" "The exact number of items in the queue."}, \
    {"full", (PyCFunction)queue_full, METH_NOARGS, "full($self, /)\n--\n\n" "Return True if a bounded queue is full."},   \
    {"join_thread", (PyCFunction)queue_join_thread, METH_NOARGS,                                \
     "join_thread($self, /)\n--\n\n" "Nothing to join (no feeder thread); AssertionError unless closed, as multiprocessing."},  \
    {"cancel_join_thread", (PyCFunction)queue_cancel_join_thread, METH_NOARGS,                  \
     "cancel_join_thread($self, /)\n--\n\n" "Nothing to cancel: put() returns once the item is in shared memory."},                    \
    COMMON_METHODS

static PyMethodDef queue_methods[] = {QUEUE_METHODS, {NULL}};

static PyMethodDef joinable_methods[] = {
    QUEUE_METHODS,
    {"task_done", (PyCFunction)queue_task_done, METH_NOARGS,
     "task_done($self, /)\n--\n\n" "Mark one item as processed; ValueError if called more often than items were put."},
    {"join", (PyCFunction)queue_join, METH_NOARGS, "join($self, /)\n--\n\n" "Block until every item put has been task_done()."},
    {NULL}
};

static PyMethodDef simple_methods[] = {
    {"get", (PyCFunction)simplequeue_get, METH_NOARGS, "get($self, /)\n--\n\nRemove and return the oldest item."},
    {"put", (PyCFunction)(void (*)(void))simplequeue_put, FASTKW, "put(obj)\n--\n\nAdd obj; never blocks."},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, NULL},
    {"_watch", (PyCFunction)queue_watch, METH_VARARGS,
     "_watch($self, wfd, rfd, /)\n--\n\nMake our pipe (its ends, rfd non-blocking) readable exactly while the queue holds an item."},
    {"_watch_sync", (PyCFunction)queue_watch_sync, METH_NOARGS,
     "_watch_sync($self, /)\n--\n\nSet the watch pipe from the queue: drained if it is empty."},
    {"_unwatch", (PyCFunction)queue_unwatch_method, METH_NOARGS,
     "_unwatch($self, /)\n--\n\nStop writing to the pipe _watch registered."},
    COMMON_METHODS,
    {NULL}
};

#define QUEUE_TYPE_COMMON                                                 \
    PyVarObject_HEAD_INIT(NULL, 0)                                        \
    .tp_basicsize = sizeof(QueueObject),                                  \
    .tp_dealloc = (destructor)queue_dealloc,                              \
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,                 \
    .tp_weaklistoffset = offsetof(QueueObject, weakreflist),              \
    .tp_new = queue_new

PyTypeObject cproc_QueueType = {
    QUEUE_TYPE_COMMON,
    .tp_name = "cproc.queues.Queue",
    .tp_doc = "Queue(maxsize=0, *, ctx=None)\n\nA process-shared FIFO queue in shared memory "
              "(multiprocessing.Queue's API, plus put_many/get_many).",
    .tp_methods = queue_methods,
    .tp_init = (initproc)queue_init,
};

PyTypeObject cproc_JoinableQueueType = {
    QUEUE_TYPE_COMMON,
    .tp_name = "cproc.queues.JoinableQueue",
    .tp_doc = "JoinableQueue(maxsize=0, *, ctx=None)\n\nA Queue with task_done() and join().",
    .tp_methods = joinable_methods,
    .tp_base = &cproc_QueueType,
};

PyTypeObject cproc_SimpleQueueType = {
    QUEUE_TYPE_COMMON,
    .tp_name = "cproc.queues.SimpleQueue",
    .tp_doc = "SimpleQueue(*, ctx=None)\n\nAn unbounded process-shared FIFO queue: get, put, empty, close.",
    .tp_methods = simple_methods,
    .tp_getset = simple_getset,
    .tp_init = (initproc)simplequeue_init,
};

static int kind_of_type(PyTypeObject *type)
{
    if (PyType_IsSubtype(type, &cproc_SimpleQueueType))
        return CPROC_Q_SIMPLE;
    if (PyType_IsSubtype(type, &cproc_JoinableQueueType))
        return CPROC_Q_JOINABLE;
    return CPROC_Q_QUEUE;
}

/* The objects queue.c needs from the standard library. */
int cproc_queue_init(PyObject *module)
{
    if (cproc_record_init() < 0)
        return -1;
    (void)module;
    return 0;
}
