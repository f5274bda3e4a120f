/* futex.c — waiting and waking on 32-bit words in shared memory.
 *
 * Owns: the futex system calls, the monotonic clock, the single
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

/* Whether this interpreter has Python threads besides ours (GIL held; a
 * thread starting meanwhile is seen at the next wait). */
static int other_threads(void)
{
    PyThreadState *me = PyThreadState_Get();
    PyThreadState *t = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(me));
    return t != me || PyThreadState_Next(t) != NULL;
}

int cproc_wait(_Atomic uint32_t *word, _Atomic uint32_t *waiters,
               cproc_try_fn try_fn, cproc_poll_fn poll_fn, void *ctx,
               int64_t deadline, int flags)
{
    uint32_t seen;
    cproc_spinner spin;
    int more = cproc_spin_begin(&spin, word, CPROC_SPIN_YIELD | (flags & CPROC_SPIN_LOCK));
    for (;;) {
        if (try_fn(ctx, &seen)) {
            cproc_spin_end(&spin);
            return CPROC_WAIT_OK;
        }
        if (!more)
            break;
        if (cproc_spin_inline(&spin) || !other_threads()) {   /* the first rounds, or no one to stall */
            more = cproc_spin_again(&spin);
            continue;
        }
        /* The rest of the spin and the yields without the GIL, as the
         * sleep: the process's other threads run meanwhile (a thread that
         * spun holding it stalled them all). try_fn needs the GIL: we look
         * again when the word changes, as a sleeper would be woken. */
        Py_BEGIN_ALLOW_THREADS
        while ((more = cproc_spin_again(&spin)) && atomic_load(word) == seen)
            ;
        Py_END_ALLOW_THREADS
    }
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
