/* mutex.c — the one pid-word mutex of the C core, with dead-holder takeover.
 *
 * Owns: taking and giving back a cproc_mutex_t (Lock and RLock, the internal
 * locks of Condition and Barrier, the queue's lock), and the test "the
 * process that holds this died", which spill.c's block slots use too.
 *
 * The API (declared in cproc.h):
 *
 *   cproc_mutex_t m;                 zeroed memory is a free mutex
 *   r = cproc_mutex_lock(&m, deadline, &dead);
 *       CPROC_MUTEX_TAKEN       held by this process;
 *       CPROC_MUTEX_TAKEN_OVER  held, taken from a holder process that died
 *                               holding it (*dead: its pid; may be NULL):
 *                               what m guards may be half-updated, the
 *                               caller repairs it (or warns) before use;
 *       CPROC_MUTEX_TIMEOUT     not taken: deadline passed, or busy with
 *                               deadline CPROC_NOWAIT (try once, no wait);
 *       CPROC_MUTEX_ERROR       not taken, exception set (a signal handler
 *                               raised, e.g. KeyboardInterrupt).
 *   cproc_mutex_unlock(&m)       free it and wake one sleeper; returns the
 *                               holder it freed (0: it was not held).
 *   cproc_holder_died(pid)       1 when `pid` (a holder's, 0 = none) is not
 *                               this process and has exited.
 *
 * Taking a free mutex and giving it back are inline (cproc.h: the try,
 * lock's fast path, unlock); this file holds the wait and the takeover.
 *
 * The word is the holder's pid, 0 when free, and the futex word waiters
 * sleep on (cproc_wait, futex.c: spin, yield, sleep, GIL released, Ctrl+C
 * answered). Taking reads the word before the compare-and-swap: a failing
 * CAS would steal the cache line from the holder. While asleep, a waiter
 * looks at the holder every ~100 ms; if it died (killed while holding), the
 * waiter swaps the dead pid for its own. The holder is a process: threads of
 * one process are told apart by the caller (RLock keeps a thread id beside
 * the word). The GIL stays held from a successful CAS to the return, so the
 * caller's bookkeeping after it is atomic for the other threads of this
 * process. models/lock.pml and models/qlock.pml check the protocol.
 */
#include "cproc.h"

int cproc_holder_died(uint32_t holder)
{
    return holder != 0 && holder != (uint32_t)cproc_pid && cproc_pid_is_dead((pid_t)holder);
}

typedef struct {
    cproc_mutex_t *m;
    uint32_t dead;        /* the holder we took over from, 0 when none */
} lock_ctx;

static int mutex_try(void *arg, uint32_t *seen)
{
    return cproc_mutex_try(((lock_ctx *)arg)->m, seen);
}

/* While asleep: if the holder process died, take the mutex over. */
static int mutex_take_over(void *arg)
{
    lock_ctx *ctx = arg;
    uint32_t holder = atomic_load(&ctx->m->holder);
    if (!cproc_holder_died(holder) ||
        !atomic_compare_exchange_strong(&ctx->m->holder, &holder, (uint32_t)cproc_pid))
        return 0;
    ctx->dead = holder;
    return 1;
}

int cproc_mutex_wait(cproc_mutex_t *m, int64_t deadline, pid_t *dead)
{
    if (deadline == CPROC_NOWAIT)
        return CPROC_MUTEX_TIMEOUT;
    lock_ctx ctx = {m, 0};
    int r = cproc_wait(&m->holder, &m->waiters, mutex_try, mutex_take_over, &ctx, deadline, CPROC_SPIN_LOCK);
    if (r == CPROC_WAIT_ERROR)
        return CPROC_MUTEX_ERROR;
    if (r == CPROC_WAIT_TIMEOUT)
        return CPROC_MUTEX_TIMEOUT;
    if (ctx.dead == 0)
        return CPROC_MUTEX_TAKEN;
    if (dead != NULL)
        *dead = (pid_t)ctx.dead;
    return CPROC_MUTEX_TAKEN_OVER;
}
