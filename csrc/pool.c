/* pool.c — the C half of cproc.Pool (the Python half is cproc/pool.py).
 *
 * - The worker loop (pool_worker): take a task record from the task queue,
 *   call, put the result record on the result queue, until a stop record,
 *   maxtasksperchild, or the pool's owner process is gone. The task's tag
 *   lands in the worker's slot under the queue's lock (channel.c), so the
 *   owner always knows which task a dead worker was running.
 * - Submission (pool_submit): turn an iterable into chunk tasks and write
 *   them in batches; a chunk that does not pickle fails just that chunk.
 * - Delivery (pool_collect): the collector thread's wait for result records
 *   (GIL released) and their delivery to the result objects.
 * - ApplyResult and MapResult, what apply_async/map_async return, are
 *   pool_result.c's.
 *
 * Records: a task is tagged with its task id (ids start at 1; STOP_TAG asks
 * the worker to leave) and holds (mode, function pickle, args, kwds); a
 * result is tagged (task id << 1 | success) and holds the value, or the
 * exception wrapped as multiprocessing does (ExceptionWithTraceback). A
 * worker that leaves after maxtasksperchild tasks says so with a result
 * record tagged STOP_TAG holding its pid, so that the collector replaces it
 * at once (pool_collect hands these pids to the caller).
 *
 * Limits (task_timeout, soft_task_timeout, max_memory_per_child) are
 * pool_limits.c's: the worker loop brackets each task with its calls.
 */
#include "cproc.h"

#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>

#define STOP_TAG_BIT 63                 /* cproc.pool reads it as _cproc.POOL_STOP_TAG_BIT */
#define STOP_TAG ((uint64_t)1 << STOP_TAG_BIT)  /* a task record's: leave; a result record's: left (RETIRED) */
#define BATCH 256                      /* records per lock round trip */
#define FLUSH_ITEMS 1024                /* items per batch, at most */
#define RANGE_CHUNK 256                 /* a range chunk this long travels as a range */

/* A task's mode; cproc.pool reads them as _cproc.POOL_MODE_APPLY etc. */
enum { MODE_APPLY = 0, MODE_MAP = 1, MODE_STARMAP = 2 };

static PyObject *ExceptionWithTraceback;   /* multiprocessing.pool's */
static PyObject *MaybeEncodingError;
static PyObject *pickle_loads;
static PyObject *apply_unpacking;          /* cproc.pool._apply: func(*args, **kwds) in Python */

static int import_pool_names(void)
{
    static const cproc_import_name names[] = {
        {"multiprocessing.pool", "MaybeEncodingError", &MaybeEncodingError},
        {"pickle", "loads", &pickle_loads},
        {"cproc.pool", "_apply", &apply_unpacking},
        {"multiprocessing.pool", "ExceptionWithTraceback", &ExceptionWithTraceback},
        {NULL}};
    return cproc_import_names(names);
}

/* The task and result queues are cproc queues: their records go through
 * channel.c, tagged with task ids. */
static int put_tagged(PyObject *queue, PyObject *const *objs, const uint64_t *tags, Py_ssize_t n,
                      PyObject *dumps, PyObject **errors)
{
    cproc_channel *ch = cproc_queue_channel(queue);
    return ch ? cproc_channel_put_batch(ch, objs, tags, n, dumps, errors) : -1;
}

static Py_ssize_t take_tagged(PyObject *queue, Py_ssize_t max, int64_t deadline, _Atomic uint64_t *claim,
                              cproc_poll_fn stop_fn, void *stop_ctx, uint64_t *tags, PyObject **objs, int *ok)
{
    cproc_channel *ch = cproc_queue_channel(queue);
    return ch ? cproc_channel_take_batch(ch, max, deadline, claim, stop_fn, stop_ctx, tags, objs, ok) : -1;
}

/* ==== the worker loop ==================================================== */

typedef struct {
    pid_t owner;
} stop_ctx;

static int owner_gone(void *ctx)
{
    return cproc_pid_is_dead(((stop_ctx *)ctx)->owner);
}

/* The function a task names: its pickle, loaded once per worker. */
static PyObject *task_function(PyObject *cache, PyObject *fbytes)
{
    PyObject *fn = PyDict_GetItemWithError(cache, fbytes);
    if (fn != NULL)
        return Py_NewRef(fn);
    if (PyErr_Occurred())
        return NULL;
    fn = PyObject_CallOneArg(pickle_loads, fbytes);
    if (fn == NULL)
        return NULL;
    if (PyDict_GET_SIZE(cache) >= 64)
        PyDict_Clear(cache);
    if (PyDict_SetItem(cache, fbytes, fn) < 0) {
        Py_DECREF(fn);
        return NULL;
    }
    return fn;
}

/* Run one task: (mode, function pickle, args, kwds). New reference, or NULL. */
static PyObject *run_task(PyObject *fcache, PyObject *task)
{
    long mode = -1;
    if (PyTuple_Check(task) && (PyTuple_GET_SIZE(task) == 4 || PyTuple_GET_SIZE(task) == 5) &&
        PyLong_Check(PyTuple_GET_ITEM(task, 0)))
        mode = PyLong_AsLong(PyTuple_GET_ITEM(task, 0));
    if (mode != MODE_APPLY && mode != MODE_MAP && mode != MODE_STARMAP) {
        PyErr_Clear();
        PyErr_SetString(PyExc_RuntimeError, "cproc pool: malformed task record");
        return NULL;
    }
    PyObject *args = PyTuple_GET_ITEM(task, 2), *kwds = PyTuple_GET_ITEM(task, 3);
    PyObject *fn = task_function(fcache, PyTuple_GET_ITEM(task, 1));
    if (fn == NULL)
        return NULL;
    PyObject *result = NULL;
    if (mode == MODE_APPLY) {
        /* func(*args, **kwds) as multiprocessing's worker runs it: a tuple and
         * a dict go straight in; anything else (a list, a UserDict, a str...)
         * is unpacked by the interpreter, with its checks and messages. */
        if (PyTuple_CheckExact(args) && PyDict_CheckExact(kwds))
            result = PyObject_Call(fn, args, PyDict_GET_SIZE(kwds) == 0 ? NULL : kwds);
        else
            result = PyObject_CallFunctionObjArgs(apply_unpacking, fn, args, kwds, NULL);
    } else {
        PyObject *items = PySequence_Fast(args, "cproc pool: a chunk must be a sequence");
        Py_ssize_t n = items ? PySequence_Fast_GET_SIZE(items) : 0;
        PyObject *out = items ? PyList_New(n) : NULL;
        for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
            PyObject *x = Py_NewRef(PySequence_Fast_GET_ITEM(items, i)), *y;
            if (mode == MODE_MAP)
                y = PyObject_CallOneArg(fn, x);
            else {
                PyObject *targs = PySequence_Tuple(x);
                y = targs ? PyObject_Call(fn, targs, NULL) : NULL;
                Py_XDECREF(targs);
            }
            Py_DECREF(x);
            if (y == NULL)
                Py_CLEAR(out);
            else
                PyList_SET_ITEM(out, i, y);
        }
        Py_XDECREF(items);
        result = out;
    }
    Py_DECREF(fn);
    return result;
}

/* The exception being raised, as multiprocessing sends it: with its traceback's text. */
static PyObject *wrap_current_exception(void)
{
    PyObject *exc = cproc_fetch_exception();
    if (exc == NULL)
        return Py_NewRef(Py_None);
    PyObject *tb = PyException_GetTraceback(exc);
    PyObject *wrapped = PyObject_CallFunctionObjArgs(ExceptionWithTraceback, exc, tb ? tb : Py_None, NULL);
    Py_XDECREF(tb);
    if (wrapped == NULL) {              /* keep the exception itself */
        PyErr_Clear();
        wrapped = Py_NewRef(exc);
    }
    Py_DECREF(exc);
    return wrapped;
}

/* Put the outcome of task `tid`; a value that does not pickle becomes
 * MaybeEncodingError, as multiprocessing's worker does. */
static int put_result(PyObject *results, uint64_t tid, int ok, PyObject *value)
{
    uint64_t tag = tid << 1 | (uint64_t)(ok != 0);
    PyObject *error = NULL;
    if (put_tagged(results, &value, &tag, 1, NULL, &error) < 0)
        return -1;
    if (error == NULL)
        return 0;
    PyObject *wrapped = PyObject_CallFunctionObjArgs(MaybeEncodingError, error, value, NULL);
    Py_DECREF(error);
    if (wrapped == NULL)
        return -1;
    tag = tid << 1;
    int r = put_tagged(results, &wrapped, &tag, 1, NULL, &error);
    Py_DECREF(wrapped);
    if (r == 0 && error != NULL) {      /* cannot happen: MaybeEncodingError holds two strings */
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        Py_DECREF(error);
        return -1;
    }
    return r;
}

/* After its last task: tell the collector that this worker leaves (its slot
 * is clear and stays so), so that it starts the replacement at once. */
static int announce_retirement(PyObject *results)
{
    PyObject *pid = PyLong_FromLong((long)getpid()), *error = NULL;
    uint64_t tag = STOP_TAG;
    int r = pid ? put_tagged(results, &pid, &tag, 1, NULL, &error) : -1;
    Py_XDECREF(pid);
    if (error != NULL) {                /* cannot happen: an int is plain data */
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        Py_DECREF(error);
        return -1;
    }
    return r;
}

/* pool_worker(tasks, results, slots, index, maxtasks, owner_pid, init_error[, timing, max_memory,
 *             limits]): limits, None or (soft, hard), are the pool's, for the records that carry none */
static PyObject *pool_worker(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *tasks, *results, *slots, *init_error, *timing_obj = Py_None, *limits_obj = Py_None;
    Py_ssize_t index, maxtasks;
    long long max_memory = 0;
    int owner;
    int64_t pool_limits[2] = {0, 0};
    if (!PyArg_ParseTuple(args, "OOOnniO|OLO:pool_worker", &tasks, &results, &slots, &index, &maxtasks,
                          &owner, &init_error, &timing_obj, &max_memory, &limits_obj) ||
        import_pool_names() < 0)
        return NULL;
    if (limits_obj != Py_None && cproc_pool_limits_ns(limits_obj, pool_limits) < 0)
        return NULL;
    if ((pool_limits[0] || pool_limits[1]) && timing_obj == Py_None) {
        PyErr_SetString(PyExc_ValueError, "pool_worker: time limits need a timing area");
        return NULL;
    }
    if (init_error != Py_None && !PyExceptionInstance_Check(init_error)) {
        PyErr_SetString(PyExc_TypeError, "init_error must be an exception or None");
        return NULL;
    }
    Py_buffer view;
    _Atomic uint64_t *slot = cproc_word_buffer(slots, &view, index < 0 ? -1 : index + 1, "worker slot");
    if (slot == NULL)
        return NULL;
    slot += index;
    Py_buffer tview = {0};
    _Atomic int64_t *timing = NULL;
    if (timing_obj != Py_None) {
        timing = cproc_word_buffer(timing_obj, &tview, CPROC_POOL_TIMING_WORDS * (index + 1),
                                   "worker timing");
        if (timing == NULL) {
            PyBuffer_Release(&view);
            return NULL;
        }
        timing += CPROC_POOL_TIMING_WORDS * index;
        cproc_pool_limits_attach(timing);
    }
    PyObject *fcache = PyDict_New();
    stop_ctx stop = {(pid_t)owner};
    int failed = fcache == NULL;
    for (Py_ssize_t done = 0; !failed && (maxtasks <= 0 || done < maxtasks); done++) {
        uint64_t tag;
        PyObject *task;
        int decoded;
        Py_ssize_t n = take_tagged(tasks, 1, CPROC_FOREVER, slot, owner_gone, &stop,
                                   &tag, &task, &decoded);
        if (n < 0) {
            failed = 1;
            break;
        }
        if (n == 0 || tag >= STOP_TAG) {          /* the owner is gone, or close() */
            Py_XDECREF(n ? task : NULL);
            break;
        }
        PyObject *value;
        int ok = 0;
        if (init_error != Py_None) {
            PyErr_SetObject((PyObject *)Py_TYPE(init_error), init_error);
            value = NULL;
        } else if (!decoded) {              /* task: what unpickling raised */
            if (PyExceptionInstance_Check(task))
                PyErr_SetObject((PyObject *)Py_TYPE(task), task);
            else
                PyErr_SetString(PyExc_RuntimeError, "cproc pool: a task record did not decode");
            value = NULL;
        } else {
            int64_t ns[2];
            value = NULL;
            if (cproc_pool_limits_begin(task, pool_limits, tag, timing, ns) == 0) {
                value = run_task(fcache, task);
                cproc_pool_limits_end(timing, ns);
            }
        }
        Py_DECREF(task);
        if (value != NULL)
            ok = 1;
        else
            value = wrap_current_exception();
        failed = put_result(results, tag, ok, value) < 0;
        Py_DECREF(value);
        if (atomic_exchange(slot, 0) & CPROC_POOL_KILL_BIT)
            break;                          /* claimed for its hard limit as it ended: the kill is coming */
        int retire = maxtasks > 0 && done + 1 == maxtasks;
        if (!failed && !retire && max_memory > 0) {
            int64_t rss = cproc_pool_rss_bytes();
            failed = rss < 0;
            retire = rss > max_memory;
        }
        if (!failed && retire) {
            failed = announce_retirement(results) < 0;
            break;
        }
    }
    Py_XDECREF(fcache);
    PyBuffer_Release(&view);
    if (timing != NULL) {
        cproc_pool_limits_attach(NULL);
        PyBuffer_Release(&tview);
    }
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

/* ==== submission and delivery ============================================ */

/* Deliver (tid, ok, value) to the result waiting for tid, removed from cache. */
static int deliver(PyObject *cache, uint64_t tid, int ok, PyObject *value)
{
    PyObject *key = PyLong_FromUnsignedLongLong(tid);
    if (key == NULL)
        return -1;
    PyObject *target = PyDict_GetItemWithError(cache, key);
    if (target == NULL) {               /* terminated, or already failed as lost */
        Py_DECREF(key);
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_INCREF(target);
    int r = PyDict_DelItem(cache, key);
    Py_DECREF(key);
    if (r == 0)
        r = cproc_pool_result_deliver(target, tid, ok, value);
    Py_DECREF(target);
    return r;
}

/* pool_collect(results, cache, timeout, retired) -> number of records taken
 * (0: timed out); results go to their result objects, the pids of workers
 * that announced their retirement are appended to the list `retired`. */
static PyObject *pool_collect(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *results, *cache, *timeout, *retired;
    if (!PyArg_ParseTuple(args, "OO!OO!:pool_collect", &results, &PyDict_Type, &cache, &timeout,
                          &PyList_Type, &retired))
        return NULL;
    int blocking;
    int64_t deadline;                   /* timeout <= 0: CPROC_NOWAIT, do not wait */
    if (cproc_block_timeout(NULL, timeout, CPROC_TIMEOUT_NOWAIT, &blocking, &deadline) < 0)
        return NULL;
    uint64_t tags[BATCH];
    PyObject *objs[BATCH];
    int ok[BATCH];
    Py_ssize_t n = take_tagged(results, BATCH, deadline, NULL, NULL, NULL, tags, objs, ok);
    if (n < 0)
        return NULL;
    int failed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (failed)
            ;
        else if (tags[i] & STOP_TAG)
            failed = PyList_Append(retired, objs[i]) < 0;
        else if (deliver(cache, tags[i] >> 1, ok[i] && (tags[i] & 1), objs[i]) < 0)
            failed = 1;
        Py_DECREF(objs[i]);
    }
    if (failed)
        return NULL;
    return PyLong_FromSsize_t(n);
}

/* Submit n tasks: tags[i] = first_tid + i, cache[tid] = result; a task that
 * does not pickle fails at once (error_callback etc.) and the rest go on. */
static int submit(PyObject *tasks, PyObject *cache, PyObject *result, uint64_t first_tid,
                  PyObject **objs, Py_ssize_t n, PyObject *dumps)
{
    uint64_t tags[BATCH];
    PyObject *errors[BATCH];
    if (n <= 0)
        return 0;
    if (n > BATCH) {
        PyErr_SetString(PyExc_SystemError, "cproc pool: batch too large");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        tags[i] = first_tid + (uint64_t)i;
        PyObject *key = PyLong_FromUnsignedLongLong(tags[i]);
        int r = key ? PyDict_SetItem(cache, key, result) : -1;
        Py_XDECREF(key);
        if (r < 0)
            return -1;
    }
    if (put_tagged(tasks, objs, tags, n, dumps, errors) < 0) {
        /* nothing was queued: no result may wait for these tasks */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *key = PyLong_FromUnsignedLongLong(tags[i]);
            if (key == NULL || PyDict_DelItem(cache, key) < 0)
                PyErr_Clear();
            Py_XDECREF(key);
        }
        PyErr_Restore(et, ev, tb);
        return -1;
    }
    int failed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (errors[i] == NULL)
            continue;
        if (!failed && deliver(cache, tags[i], 0, errors[i]) < 0)
            failed = 1;
        Py_DECREF(errors[i]);
    }
    return failed ? -1 : 0;
}

/* Tasks being batched for submit(): one lock round trip per batch. */
typedef struct {
    PyObject *tasks, *cache, *result, *dumps;
    PyObject *limits;                   /* NULL, or each task's fifth item */
    uint64_t next_tid;
    Py_ssize_t chunksize, n, total;
    PyObject *items[BATCH];
} task_batch;

static int batch_flush(task_batch *b)
{
    int r = b->n == 0 ? 0 : submit(b->tasks, b->cache, b->result, b->next_tid, b->items, b->n, b->dumps);
    for (Py_ssize_t i = 0; i < b->n; i++)
        Py_DECREF(b->items[i]);
    b->next_tid += (uint64_t)b->n;
    b->total += b->n;
    b->n = 0;
    return r;
}

/* Add (mode, fbytes, chunk, None) to the batch; large chunks go at once, so
 * the workers start while the next is built. Steals nothing. */
static int batch_add(task_batch *b, PyObject *mode, PyObject *fbytes, PyObject *chunk)
{
    PyObject *task = b->limits ? PyTuple_Pack(5, mode, fbytes, chunk, Py_None, b->limits)
                               : PyTuple_Pack(4, mode, fbytes, chunk, Py_None);
    if (task == NULL)
        return -1;
    b->items[b->n++] = task;
    if (b->n == BATCH || b->n * b->chunksize >= FLUSH_ITEMS)
        return batch_flush(b);
    return 0;
}

/* The chunks of a range, as ranges. */
static int submit_range(task_batch *b, PyObject *mode, PyObject *fbytes, PyObject *range)
{
    Py_ssize_t len = PyObject_Length(range);
    if (len < 0)
        return -1;
    for (Py_ssize_t lo = 0; lo < len; lo += b->chunksize) {
        Py_ssize_t hi = len - lo > b->chunksize ? lo + b->chunksize : len;
        PyObject *start = PyLong_FromSsize_t(lo), *stop = PyLong_FromSsize_t(hi);
        PyObject *slice = start && stop ? PySlice_New(start, stop, NULL) : NULL;
        PyObject *chunk = slice ? PyObject_GetItem(range, slice) : NULL;
        Py_XDECREF(start);
        Py_XDECREF(stop);
        Py_XDECREF(slice);
        int r = chunk ? batch_add(b, mode, fbytes, chunk) : -1;
        Py_XDECREF(chunk);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* The chunks of any iterable, as tuples. */
static int submit_chunks(task_batch *b, PyObject *mode, PyObject *fbytes, PyObject *iterable)
{
    PyObject *it = PyObject_GetIter(iterable);
    if (it == NULL)
        return -1;
    int r = 0;
    for (Py_ssize_t k = b->chunksize; r == 0 && k == b->chunksize;) {
        PyObject *chunk = PyTuple_New(b->chunksize);
        if (chunk == NULL) {
            r = -1;
            break;
        }
        for (k = 0; k < b->chunksize; k++) {
            PyObject *x = PyIter_Next(it);
            if (x == NULL)
                break;
            PyTuple_SET_ITEM(chunk, k, x);
        }
        if (PyErr_Occurred() || (k > 0 && k < b->chunksize && _PyTuple_Resize(&chunk, k) < 0))
            r = -1;
        else if (k > 0)
            r = batch_add(b, mode, fbytes, chunk);
        Py_XDECREF(chunk);
    }
    Py_DECREF(it);
    return r;
}

/* pool_submit(tasks, cache, result, first_tid, mode, fbytes, iterable, chunksize, dumps[, limits])
 * -> the number of tasks: apply (mode 0: iterable is (args, kwds)), or the
 * chunks of a map/starmap; limits: None, or (soft, hard) for every task. */
static PyObject *pool_submit(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9 && nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "pool_submit takes 9 or 10 arguments");
        return NULL;
    }
    PyObject *limits = nargs == 10 && args[9] != Py_None ? args[9] : NULL;
    if (limits != NULL && (!PyTuple_Check(limits) || PyTuple_GET_SIZE(limits) != 2)) {
        PyErr_SetString(PyExc_TypeError, "limits must be None or (soft, hard)");
        return NULL;
    }
    PyObject *tasks = args[0], *cache = args[1], *result = args[2], *fbytes = args[5], *dumps = args[8];
    uint64_t first = PyLong_AsUnsignedLongLong(args[3]);
    long mode = PyLong_AsLong(args[4]);
    Py_ssize_t chunksize = PyLong_AsSsize_t(args[7]);
    if (PyErr_Occurred())
        return NULL;
    if (!PyDict_Check(cache)) {
        PyErr_SetString(PyExc_TypeError, "cache must be a dict");
        return NULL;
    }
    if (mode != MODE_APPLY && mode != MODE_MAP && mode != MODE_STARMAP) {
        PyErr_SetString(PyExc_ValueError, "unknown task mode");
        return NULL;
    }
    if (dumps == Py_None)
        dumps = NULL;
    if (mode == MODE_APPLY) {
        PyObject *pair = args[6];
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "apply takes (args, kwds)");
            return NULL;
        }
        PyObject *a = PyTuple_GET_ITEM(pair, 0), *k = PyTuple_GET_ITEM(pair, 1);
        PyObject *task = limits ? PyTuple_Pack(5, args[4], fbytes, a, k, limits) : PyTuple_Pack(4, args[4], fbytes, a, k);
        if (task == NULL)
            return NULL;
        int r = submit(tasks, cache, result, first, &task, 1, dumps);
        Py_DECREF(task);
        return r < 0 ? NULL : PyLong_FromLong(1);
    }
    if (chunksize < 1) {
        PyErr_SetString(PyExc_ValueError, "chunksize must be at least 1");
        return NULL;
    }
    task_batch b = {tasks, cache, result, dumps, limits, first, chunksize, 0, 0, {NULL}};
    int r;
    if (PyRange_Check(args[6]) && chunksize >= RANGE_CHUNK) /* chunks of a range are ranges: tiny to send */
        r = submit_range(&b, args[4], fbytes, args[6]);
    else
        r = submit_chunks(&b, args[4], fbytes, args[6]);
    if (r < 0) {
        for (Py_ssize_t i = 0; i < b.n; i++)
            Py_DECREF(b.items[i]);
        return NULL;
    }
    if (batch_flush(&b) < 0)
        return NULL;
    return PyLong_FromSsize_t(b.total);
}

static PyMethodDef pool_functions[] = {
    {"pool_worker", pool_worker, METH_VARARGS,
     "pool_worker(tasks, results, slots, index, maxtasks, owner_pid, init_error[, timing, max_memory, "
     "limits]): a Pool worker's loop."},
    {"pool_collect", pool_collect, METH_VARARGS,
     "pool_collect(results, cache, timeout, retired): deliver the results that arrive within timeout "
     "(retiring workers' pids go to the list retired); their number."},
    {"pool_submit", (PyCFunction)(void (*)(void))pool_submit, METH_FASTCALL,
     "pool_submit(tasks, cache, result, first_tid, mode, fbytes, iterable, chunksize, dumps[, limits]): "
     "queue tasks."},
    {NULL},
};

int cproc_pool_init(PyObject *module)
{
    if (cproc_pool_result_init(module) < 0 || cproc_pool_limits_init(module) < 0 ||
        PyModule_AddFunctions(module, pool_functions) < 0 ||
        PyModule_AddIntConstant(module, "POOL_STOP_TAG_BIT", STOP_TAG_BIT) < 0 ||
        PyModule_AddIntConstant(module, "POOL_MODE_APPLY", MODE_APPLY) < 0 ||
        PyModule_AddIntConstant(module, "POOL_MODE_MAP", MODE_MAP) < 0 ||
        PyModule_AddIntConstant(module, "POOL_MODE_STARMAP", MODE_STARMAP) < 0)
        return -1;
    return 0;
}
