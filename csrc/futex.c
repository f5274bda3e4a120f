/* futex.c — waiting and waking on 32-bit words in shared memory.
 *
 * Owns: the futex system calls, deadlines on the monotonic clock, the single
 * spin-then-sleep wait loop every primitive uses, the cached process identity
 * and the "is that process dead?" check used to recover locks.
 * Never blocks with the GIL held; on EINTR runs the signal handlers so that
 * Ctrl+C raises KeyboardInterrupt at once.
 */
#include "cproc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define POLL_FIRST_NS (10 * 1000000LL)   /* first dead-holder check after 10 ms */
#define POLL_EVERY_NS (100 * 1000000LL)  /* then every 100 ms */
/* A signal that arrives while we are not inside the sleeping system call
 * (spinning, checking a holder, between two sleeps) interrupts nothing: its
 * handler runs at our next check. Sleeps are therefore cut into slices. */
#define SIGNAL_SLICE_NS (50 * 1000000LL)

pid_t cproc_pid;

static void refresh_pid(void) { cproc_pid = getpid(); }

int cproc_identity_init(void)
{
    refresh_pid();
    int err = pthread_atfork(NULL, NULL, refresh_pid);
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

int cproc_pid_is_dead(pid_t pid)
{
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) == -1)
        return errno == ESRCH;     /* EPERM: alive, another user's */
    /* kill() succeeds on zombies: look at the state in /proc/<pid>/stat. */
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');  /* the command name may hold spaces */
    if (paren == NULL || paren[1] != ' ')
        return 0;
    return paren[2] == 'Z' || paren[2] == 'X';
}

int64_t cproc_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  /* cannot fail for this clock */
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int cproc_deadline_from_timeout(PyObject *timeout, int64_t *deadline)
{
    if (timeout == NULL || timeout == Py_None) {
        *deadline = CPROC_FOREVER;
        return 0;
    }
    double t = PyFloat_AsDouble(timeout);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(t)) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return -1;
    }
    if (t < 0)
        t = 0;
    if (t > 1e9) {                 /* ~31 years: as good as forever */
        *deadline = CPROC_FOREVER;
        return 0;
    }
    *deadline = cproc_monotonic_ns() + (int64_t)(t * 1e9);
    return 0;
}

/* 0: woken or the word changed; ETIMEDOUT; EINTR; another errno on failure. */
static int futex_wait_until(_Atomic uint32_t *word, uint32_t expected, int64_t deadline)
{
    struct timespec ts, *tsp = NULL;
    if (deadline != CPROC_FOREVER) {
        ts.tv_sec = deadline / 1000000000LL;
        ts.tv_nsec = deadline % 1000000000LL;
        tsp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time; not
     * FUTEX_PRIVATE: the word is shared between processes. */
    if (syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET, expected, tsp,
                NULL, FUTEX_BITSET_MATCH_ANY) == 0)
        return 0;
    return errno == EAGAIN ? 0 : errno;
}

void cproc_futex_wake(_Atomic uint32_t *word, int n)
{
    /* Cannot fail on a valid mapped address; nothing useful to do if it did. */
    (void)syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
}

int cproc_wait(_Atomic uint32_t *word, _Atomic uint32_t *waiters,
               cproc_try_fn try_fn, cproc_poll_fn poll_fn, void *ctx,
               int64_t deadline)
{
    uint32_t seen;
    cproc_spinner spin;
    cproc_spin_begin(&spin, word, 1);
    do {
        if (try_fn(ctx, &seen)) {
            cproc_spin_end(&spin);
            return CPROC_WAIT_OK;
        }
    } while (cproc_spin_again(&spin));
    int64_t next_poll = poll_fn ? cproc_monotonic_ns() + POLL_FIRST_NS : CPROC_FOREVER;
    int result;
    for (;;) {
        if (try_fn(ctx, &seen)) {
            cproc_spin_end(&spin);
            return CPROC_WAIT_OK;
        }
        int64_t now = cproc_monotonic_ns();
        if (poll_fn && (now >= next_poll || (deadline != CPROC_FOREVER && now >= deadline))) {
            if (poll_fn(ctx)) {
                cproc_spin_end(&spin);
                return CPROC_WAIT_OK;
            }
            next_poll = now + POLL_EVERY_NS;
        }
        if (deadline != CPROC_FOREVER && now >= deadline) {
            result = CPROC_WAIT_TIMEOUT;
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            result = CPROC_WAIT_ERROR;
            break;
        }
        int64_t until = now + SIGNAL_SLICE_NS;
        if (deadline != CPROC_FOREVER && deadline < until)
            until = deadline;
        if (next_poll != CPROC_FOREVER && next_poll < until)
            until = next_poll;

        int err;
        atomic_fetch_add(waiters, 1);
        Py_BEGIN_ALLOW_THREADS
        err = futex_wait_until(word, seen, until);
        Py_END_ALLOW_THREADS
        atomic_fetch_sub(waiters, 1);

        if (err == EINTR) {
            if (PyErr_CheckSignals() < 0) {
                result = CPROC_WAIT_ERROR;
                break;
            }
        } else if (err != 0 && err != ETIMEDOUT) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            result = CPROC_WAIT_ERROR;
            break;
        }
    }
    cproc_spin_end(&spin);
    /* We may have consumed a wake-up meant for a sleeper that stays asleep:
     * pass it on (a spurious wake-up costs nothing, a lost one hangs). */
    cproc_wake_waiters(word, waiters, 1);
    return result;
}

int cproc_poll_until(struct pollfd *pfds, unsigned long n, int64_t deadline)
{
    for (;;) {
        if (PyErr_CheckSignals() < 0)
            return -1;
        int64_t left = deadline == CPROC_FOREVER ? SIGNAL_SLICE_NS : deadline - cproc_monotonic_ns();
        if (left > SIGNAL_SLICE_NS)
            left = SIGNAL_SLICE_NS;
        int timeout_ms = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
        int r, err;
        Py_BEGIN_ALLOW_THREADS
        r = poll(pfds, (nfds_t)n, timeout_ms);
        err = errno;
        Py_END_ALLOW_THREADS
        if (r > 0)
            return r;
        if (r == 0) {
            /* a slice ended, or poll() rounded to whole milliseconds */
            if (deadline != CPROC_FOREVER && cproc_monotonic_ns() >= deadline)
                return 0;
            continue;
        }
        if (err != EINTR) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
}

/* ---- argument parsing shared by acquire() and friends ------------------- */

PyObject *cproc_fetch_exception(void)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (ev != NULL && tb != NULL)
        PyException_SetTraceback(ev, tb);
    Py_XDECREF(et);
    Py_XDECREF(tb);
    return ev;
}

int cproc_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                     const char *const *names, int nrequired, PyObject **out)
{
    int n = 0;
    while (names[n] != NULL)
        n++;
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d argument%s (%zd given)", fname, n,
                     n == 1 ? "" : "s", nargs);
        return -1;
    }
    for (int i = 0; i < n; i++)
        out[i] = i < nargs ? args[i] : NULL;
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nk; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int i = 0;
        while (i < n && PyUnicode_CompareWithASCIIString(key, names[i]) != 0)
            i++;
        if (i == n) {
            PyErr_Format(PyExc_TypeError, "'%U' is an invalid keyword argument for %s()", key, fname);
            return -1;
        }
        if (out[i] != NULL) {
            PyErr_Format(PyExc_TypeError, "argument for %s() given by name ('%U') and position (%d)",
                         fname, key, i + 1);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (int i = 0; i < nrequired; i++)
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s' (pos %d)",
                         fname, names[i], i + 1);
            return -1;
        }
    return 0;
}

int cproc_parse_block_timeout(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames, int *blocking, int64_t *deadline)
{
    static const char *const names[] = {"block", "timeout", NULL};
    PyObject *val[2];
    if (cproc_parse_args(fname, args, nargs, kwnames, names, 0, val) < 0)
        return -1;
    *blocking = 1;
    if (val[0] != NULL && (*blocking = cproc_blocking_arg(val[0])) < 0)
        return -1;
    return cproc_deadline_from_timeout(val[1], deadline);
}

int cproc_semlock_int_arg(PyObject *o, int *out)
{
#if PY_VERSION_HEX < 0x030A0000
    return PyArg_Parse(o, "i", out) ? 0 : -1;      /* 3.9's SemLock() parses "iiisi" */
#else
#if PY_VERSION_HEX >= 0x030D0000
    *out = PyLong_AsInt(o);
#else
    *out = _PyLong_AsInt(o);
#endif
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
#endif
}

int cproc_blocking_arg(PyObject *block)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyObject_IsTrue(block);      /* 3.12's SemLock.acquire: block is a bool */
#else
    /* up to 3.11 an int, read as _multiprocessing's argument clinic code does */
#if PY_VERSION_HEX < 0x030A0000
    if (PyFloat_Check(block)) {
        PyErr_SetString(PyExc_TypeError, "integer argument expected, got float");
        return -1;
    }
#endif
    int v = _PyLong_AsInt(block);
    if (v == -1 && PyErr_Occurred())
        return -1;
    return v != 0;
#endif
}

int cproc_parse_optional_arg(const char *fname, const char *name, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames, PyObject **value)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 1 argument (%zd given)", fname, nargs + nkw);
        return -1;
    }
    if (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), name) != 0) {
        PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                     fname, PyTuple_GET_ITEM(kwnames, 0));
        return -1;
    }
    if (nargs + nkw == 1)
        *value = args[0];
    return 0;
}
