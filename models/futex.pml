/* futex.pml — the futex and the cproc_wait() loop (csrc/futex.c), shared by
 * every model. Include it after defining NPROC (the number of proctypes; they
 * must be the first NPROC processes, so _pid indexes the arrays below).
 *
 * The futex, as Linux gives it:
 *   wait(word, seen): atomically, sleep only if word == seen (else return);
 *   wake(word, n):    wake up to n of the processes sleeping on word, any n.
 * A sleeper stays asleep until woken: the models do NOT give cproc_wait's
 * 50 ms sleep slices a chance to rescue a lost wake-up, so "no lost wake-up"
 * is proven without them. The only spontaneous ends of a sleep modelled are
 * a timeout (a wait with a deadline) and, for waits with a poll_fn, the
 * periodic poll once the lock's holder is dead (what the poll is for).
 *
 * cproc_wait(word, waiters, try_fn, poll_fn, ctx, deadline) is written out in
 * each model as this loop (the spin and yield phases only add tries, which
 * the loop already makes in every interleaving):
 *
 *   do
 *   :: TRY(seen); if :: ok -> break :: else fi;          try_fn
 *      [POLL: if :: took_over -> ok = 1; break :: else fi]  poll_fn
 *      MAYBE_DEADLINE(timed);                            now >= deadline ?
 *      if :: timedout -> break :: else fi;               CPROC_WAIT_TIMEOUT
 *      futex_sleep(word, WID, seen, waiters, timed, pollcond)
 *   od;
 *   if :: !ok -> wake_waiters(word, WID, waiters, 1) :: else fi   pass on a wake
 *
 * A KeyboardInterrupt (CPROC_WAIT_ERROR) leaves the loop at the same points
 * as a timeout and takes the same exits in every caller, so a timeout stands
 * for both.
 */

#ifndef TIMEOUTS
#define TIMEOUTS 2      /* deadlines that may pass, per process */
#endif

bit asleep[NPROC];      /* queued on a futex */
byte tmo_used[NPROC];   /* deadlines passed so far */
byte sleepon[NPROC];    /* which word (models number their futex words) */

hidden byte wk_n, wk_i, wk_w;   /* scratch, inside atomic steps only */

/* Wake up to n sleepers of word `wid`, chosen in every possible way. */
inline futex_wake(wid, n)
{
    atomic {
        wk_n = n;
        do
        :: wk_n == 0 -> break
        :: else ->
            wk_w = 255; wk_i = 0;
            do
            :: wk_i == NPROC -> break
            :: wk_i < NPROC && asleep[wk_i] && sleepon[wk_i] == wid ->
                if
                :: wk_w = wk_i
                :: wk_w != 255          /* keep the one chosen before */
                fi;
                wk_i++
            :: wk_i < NPROC && !(asleep[wk_i] && sleepon[wk_i] == wid) -> wk_i++
            od;
            if
            :: wk_w == 255 -> break
            :: else -> asleep[wk_w] = 0; wk_n--
            fi
        od;
        wk_n = 0; wk_i = 0; wk_w = 0
    }
}

/* Wake every sleeper of word `wid` (INT_MAX). */
inline futex_wake_all(wid)
{
    atomic {
        wk_i = 0;
        do
        :: wk_i == NPROC -> break
        :: else ->
            if
            :: asleep[wk_i] && sleepon[wk_i] == wid -> asleep[wk_i] = 0
            :: else
            fi;
            wk_i++
        od;
        wk_i = 0
    }
}

/* cproc_wake_waiters (cproc.h): a system call only when someone sleeps. */
inline wake_waiters(wid, waitersv, n)
{
    if
    :: waitersv != 0 -> futex_wake(wid, n)
    :: else
    fi
}

inline wake_waiters_all(wid, waitersv)
{
    if
    :: waitersv != 0 -> futex_wake_all(wid)
    :: else
    fi
}

/* The deadline may pass at any check (only for waits that have one). A
 * process sees at most TIMEOUTS deadlines pass: a deadline is long next to
 * the protocol's steps, so a retried wait_for() does not time out forever
 * while the process it waits for is ready to run (unbounded, that would be
 * a starvation the weak fairness of the liveness check does not exclude). */
inline MAYBE_DEADLINE(timed)
{
    if
    :: atomic { timed && !timedout && tmo_used[_pid] < TIMEOUTS -> timedout = 1; tmo_used[_pid]++ }
    :: true
    fi
}

/* The sleeping part of one cproc_wait iteration: count ourselves in
 * `waitersv`, futex-wait on `wordv` (id `wid`) expecting `seen`, then
 * uncount. Ends when woken, at the deadline (timed), or by a poll when
 * `pollcond` holds (the holder died). Needs a local `bit timedout`. */
inline futex_sleep(wordv, wid, seen, waitersv, timed, pollcond)
{
    waitersv++;
    atomic {
        if
        :: wordv == seen -> sleepon[_pid] = wid; asleep[_pid] = 1
        :: else                         /* EAGAIN: the word changed */
        fi
    };
    if
    :: !asleep[_pid]
    :: atomic { asleep[_pid] && timed && tmo_used[_pid] < TIMEOUTS ->
                asleep[_pid] = 0; timedout = 1; tmo_used[_pid]++ }
    :: atomic { asleep[_pid] && (pollcond) -> asleep[_pid] = 0 }
    fi;
    sleepon[_pid] = 0;
    waitersv--
}
