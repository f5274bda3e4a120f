/* pool_limits.c — a Pool's time and memory limits (cproc.Pool's
 * task_timeout, soft_task_timeout, max_memory_per_child).
 *
 * None set, none of this runs. The pool's (soft, hard), in seconds, are
 * given to each worker when it starts; a task record carries a fifth item
 * (soft, hard) only when its call named its own, so a record under the
 * pool's limits costs no more than one without. When it starts a task with
 * a limit, the worker writes its CPROC_POOL_TIMING_WORDS words of `timing`
 * (ns of CLOCK_MONOTONIC): [0] the hard deadline, [1] the hard limit, [2]
 * the soft deadline, [3] the task id while the soft limit runs. The
 * collector (pool_timeouts) waits until the earliest deadline. Hard: it
 * claims the task by setting CPROC_POOL_KILL_BIT in the worker's slot with a
 * compare-and-swap, then kills the worker; a worker that clears a slot
 * holding the bit (it finished just as it was claimed) leaves instead of
 * taking another task, so the kill never takes a second task with it. Soft:
 * it sets FIRED_BIT in word [3] the same way and sends SIGALRM; the worker's
 * handler (cproc.pool's) raises SoftTimeLimitExceeded only if word [3] still
 * holds the bit, so a signal that lands after the task ended is ignored. No
 * syscall per task. max_memory: the worker's RSS, read from
 * /proc/self/statm after each task; past it, the worker retires as after
 * maxtasksperchild.
 *
 * The worker loop (pool.c) brackets each task with cproc_pool_limits_begin
 * and _end; the collector calls pool_timeouts.
 */
#include "cproc.h"

#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#define FIRED_BIT ((int64_t)1 << 62)    /* in timing word [3]: the soft limit's SIGALRM is sent */

static PyObject *install_soft_limit;    /* cproc.pool._install_soft_limit: the SIGALRM handler */
static _Atomic int64_t *soft_word;      /* this worker process's timing word [3] (pool_soft_fired) */

void cproc_pool_limits_attach(_Atomic int64_t *timing)
{
    soft_word = timing == NULL ? NULL : &timing[3];
}

/* Limits in ns (0: none) from a (soft, hard) pair of seconds, each a positive
 * number or None. */
int cproc_pool_limits_ns(PyObject *limits, int64_t ns_out[2])
{
    ns_out[0] = ns_out[1] = 0;
    if (!PyTuple_Check(limits) || PyTuple_GET_SIZE(limits) != 2) {
        PyErr_SetString(PyExc_RuntimeError, "cproc pool: malformed task limits");
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        PyObject *x = PyTuple_GET_ITEM(limits, i);
        if (x == Py_None)
            continue;
        double seconds = PyFloat_AsDouble(x);
        if (seconds == -1.0 && PyErr_Occurred())
            return -1;
        if (!(seconds > 0 && seconds < 1e9)) {
            PyErr_SetString(PyExc_ValueError, "cproc pool: a time limit must be positive");
            return -1;
        }
        int64_t ns = (int64_t)(seconds * 1e9);
        ns_out[i] = ns > 0 ? ns : 1;
    }
    return 0;
}

/* A task's limits in ns, soft then hard: its record's fifth item if it has
 * one (a call that named its own), else the pool's (pool_defaults, given to
 * the worker at its start: a record then carries no limits at all). */
static int task_limits(PyObject *task, const int64_t pool_defaults[2], int64_t ns_out[2])
{
    if (!PyTuple_Check(task) || PyTuple_GET_SIZE(task) != 5) {
        ns_out[0] = pool_defaults[0];
        ns_out[1] = pool_defaults[1];
        return 0;
    }
    return cproc_pool_limits_ns(PyTuple_GET_ITEM(task, 4), ns_out);
}

/* Before this process's first task with a soft limit: its SIGALRM handler. */
static int install_soft_handler(void)
{
    static int installed;
    if (installed)
        return 0;
    static const cproc_import_name names[] = {
        {"cproc.pool", "_install_soft_limit", &install_soft_limit}, {NULL}};
    if (cproc_import_names(names) < 0)
        return -1;
    PyObject *r = PyObject_CallNoArgs(install_soft_limit);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    installed = 1;
    return 0;
}

int cproc_pool_limits_begin(PyObject *task, const int64_t pool_limits[2], uint64_t tag,
                            _Atomic int64_t *timing, int64_t ns[2])
{
    if (task_limits(task, pool_limits, ns) < 0)
        return -1;
    int64_t soft = ns[0], hard = ns[1];
    if (soft == 0 && hard == 0)
        return 0;
    if (timing == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "cproc pool: a time limit without a timing area");
        return -1;
    }
    if (soft > 0 && install_soft_handler() < 0)
        return -1;
    int64_t now = cproc_monotonic_ns();
    if (hard > 0) {
        atomic_store(&timing[1], hard);
        atomic_store(&timing[0], now + hard);
    }
    if (soft > 0) {                     /* the task, then its deadline; cleared in the other order */
        atomic_store(&timing[3], (int64_t)tag);
        atomic_store(&timing[2], now + soft);
    }
    return 0;
}

void cproc_pool_limits_end(_Atomic int64_t *timing, const int64_t ns[2])
{
    if (ns[1] > 0)
        atomic_store(&timing[0], 0);
    if (ns[0] > 0) {
        atomic_store(&timing[2], 0);
        atomic_store(&timing[3], 0);    /* a SIGALRM still on its way finds no task: ignored */
    }
}

/* pool_soft_fired() -> whether this worker's task is past its soft limit
 * (what a SIGALRM means here). */
static PyObject *pool_soft_fired(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(unused))
{
    return PyBool_FromLong(soft_word != NULL && (atomic_load(soft_word) & FIRED_BIT) != 0);
}

/* This process's resident set size in bytes, or -1 (OSError set). */
int64_t cproc_pool_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/proc/self/statm");
        return -1;
    }
    long size, resident;
    int n = fscanf(f, "%ld %ld", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    if (n != 2 || resident < 0 || page <= 0) {
        PyErr_SetString(PyExc_OSError, "cproc pool: cannot read /proc/self/statm");
        return -1;
    }
    return (int64_t)resident * page;
}

/* pool_timeouts(slots, timing) -> (claimed, soft, wait). claimed: the tasks
 * past their hard deadline, each claimed (CPROC_POOL_KILL_BIT set in its worker's slot,
 * so the worker cannot take another) as (worker index, task id, limit in
 * seconds); soft: the indexes of the workers whose task is past its soft
 * deadline, marked FIRED_BIT (each once), to be sent SIGALRM; wait: the
 * seconds until the next deadline, or None. A worker writes the word that
 * names its task before the deadline and clears the deadline first: a
 * deadline read again unchanged after that word belongs to its task. */
static PyObject *pool_timeouts(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *slots_obj, *timing_obj;
    if (!PyArg_ParseTuple(args, "OO:pool_timeouts", &slots_obj, &timing_obj))
        return NULL;
    Py_buffer sview, tview;
    _Atomic uint64_t *slots = cproc_word_buffer(slots_obj, &sview, 0, "slots");
    if (slots == NULL)
        return NULL;
    Py_ssize_t n = sview.len / (Py_ssize_t)sizeof(uint64_t);
    _Atomic int64_t *timing = cproc_word_buffer(timing_obj, &tview, CPROC_POOL_TIMING_WORDS * n, "timing");
    if (timing == NULL) {
        PyBuffer_Release(&sview);
        return NULL;
    }
    PyObject *claimed = PyList_New(0), *soft = PyList_New(0);
    int64_t now = cproc_monotonic_ns(), next = INT64_MAX;
    int failed = claimed == NULL || soft == NULL;
    for (Py_ssize_t i = 0; !failed && i < n; i++) {
        _Atomic int64_t *t = &timing[CPROC_POOL_TIMING_WORDS * i];
        int64_t deadline = atomic_load(&t[0]);
        if (deadline > now)
            next = deadline < next ? deadline : next;
        else if (deadline != 0) {
            uint64_t tag = atomic_load(&slots[i]);
            int64_t limit = atomic_load(&t[1]);
            if (tag != 0 && tag < CPROC_POOL_KILL_BIT && atomic_load(&t[0]) == deadline &&
                atomic_compare_exchange_strong(&slots[i], &tag, tag | CPROC_POOL_KILL_BIT)) {
                PyObject *item = Py_BuildValue("(nKd)", i, (unsigned long long)tag, (double)limit / 1e9);
                failed = item == NULL || PyList_Append(claimed, item) < 0;
                Py_XDECREF(item);
                continue;               /* (on failure the claim stands: the worker leaves after its task) */
            }
        }
        int64_t soft_deadline = atomic_load(&t[2]);
        if (soft_deadline > now)
            next = soft_deadline < next ? soft_deadline : next;
        else if (soft_deadline != 0) {
            int64_t task = atomic_load(&t[3]);
            if (task != 0 && !(task & FIRED_BIT) && atomic_load(&t[2]) == soft_deadline &&
                atomic_compare_exchange_strong(&t[3], &task, task | FIRED_BIT)) {
                PyObject *index = PyLong_FromSsize_t(i);
                failed = index == NULL || PyList_Append(soft, index) < 0;
                Py_XDECREF(index);
            }
        }
    }
    PyBuffer_Release(&sview);
    PyBuffer_Release(&tview);
    PyObject *wait = NULL, *r = NULL;
    if (!failed)
        wait = next == INT64_MAX ? Py_NewRef(Py_None) : PyFloat_FromDouble((double)(next - now) / 1e9);
    if (wait != NULL)
        r = PyTuple_Pack(3, claimed, soft, wait);
    Py_XDECREF(claimed);
    Py_XDECREF(soft);
    Py_XDECREF(wait);
    return r;
}

static PyMethodDef limits_functions[] = {
    {"pool_timeouts", pool_timeouts, METH_VARARGS,
     "pool_timeouts(slots, timing) -> (claimed, soft, wait): claim the tasks past their time limits."},
    {"pool_soft_fired", pool_soft_fired, METH_NOARGS,
     "pool_soft_fired() -> whether this worker's task is past its soft time limit."},
    {NULL},
};

int cproc_pool_limits_init(PyObject *module)
{
    if (PyModule_AddFunctions(module, limits_functions) < 0 ||
        PyModule_AddIntConstant(module, "POOL_TIMING_WORDS", CPROC_POOL_TIMING_WORDS) < 0 ||
        PyModule_AddIntConstant(module, "POOL_KILL_BIT", 62) < 0)
        return -1;
    return 0;
}
