/* barrier.pml — Barrier (csrc/barrier.c barrier_wait, barrier_sleep,
 * barrier_break_locked, barrier_next_gen).
 *
 * gen is the futex word; it moves on when a round is released or broken.
 * count, broken and bhist are guarded by the internal lock m, modelled
 * here as an atomic test-and-set lock (its futex protocol is lock.pml's);
 * a critical section that writes gen at most once and sleeps nowhere is one
 * atomic step (sound: only gen is read without m).
 * Releasing a round and breaking one wake with cproc_futex_wake(gen, INT_MAX)
 * (unconditionally, not through the sleepers count).
 *
 * Processes: NPROC = 4 on a Barrier(2), one wait() each, so one of them may
 * arrive while the last arriver of the first round runs the action (it then
 * waits for the action to end); the last process waits with a timeout and
 * breaks its round when it gives up.
 * Checked: a wait() returns an index only when its round had PARTIES
 * arrivals; no invalid end state; every process finishes (LTL, weak fairness).
 * Mutant (must fail): -DBUG_WAKE_FIRST wakes before moving gen on.
 * -DRESET: 3 processes; the timed one calls reset() before its wait
 * (processes may then legitimately wait forever, so only the assertions are
 * checked: pan -E). This model found a bug in the code before: a waiter
 * woken by the break of its round read a single broken_gen only after
 * re-taking m, and if meanwhile reset() and the break of a later round
 * overwrote it, returned an index for a broken round. Now every round end
 * records its outcome in bhist[round] (the C keeps the last 64 rounds' in
 * broken_hist: barrier_next_gen, barrier_round_broken).
 */
#ifdef RESET
#define NPROC 3
#else
#define NPROC 4
#endif
#define PARTIES 2
#define W_GEN 1
#define TIMEOUTS 1               /* the one timed wait times out at most once */
#include "futex.pml"

byte m;                          /* internal lock: holder's _pid + 1 */
byte gen = 1, sleepers;
byte count, broken;
bit bhist[8];                    /* outcome of each ended round: 1 broken */
byte arrived[8];                 /* ghost: arrivals in round gen */
#ifdef RESET
bit rbroken[8];                  /* ghost: round gen ended broken */
#define RBROKEN(g) rbroken[g] = 1
#else
#define RBROKEN(g) skip          /* (without reset() one round at most breaks) */
#endif
byte ndone;

ltl live { <> (ndone == NPROC) }

inline lock_m()   { atomic { m == 0 -> m = _pid + 1 } }
inline unlock_m() { m = 0 }

inline next_gen(b) { bhist[gen] = b; gen++; count = 0 }

/* barrier_sleep: cproc_wait(gen, sleepers, barrier_gen_try) */
inline barrier_sleep(g, timed)
{
    ok = 0; timedout = 0;
    do
    :: atomic { seen = gen; ok = (seen != g) };      /* barrier_gen_try */
        if :: ok -> seen = 0; break :: else fi;
        MAYBE_DEADLINE(timed);
        if :: timedout -> seen = 0; break :: else fi;
        futex_sleep(gen, W_GEN, seen, sleepers, timed, false);
        seen = 0
    od;
    if :: !ok -> wake_waiters(W_GEN, sleepers, 1) :: else fi
}

active [NPROC] proctype P()
{
    byte g, mygen, seen;      /* the arrival index (count before ++) plays no part */
    bit ok, timedout, timed = (_pid == NPROC - 1), isbroken, last, broke;
#ifdef RESET
    if
    :: timed ->                                /* barrier_reset() first */
        atomic {
            lock_m();
            if :: count > 0 -> rbroken[gen] = 1; next_gen(1) :: else fi;
            broken = 0;
            unlock_m()
        };
        futex_wake_all(W_GEN)
    :: else
    fi;
#endif

    /* while the previous round's action runs, newcomers wait for it to end */
    do
    :: atomic { lock_m();
            if
            :: !broken && count >= PARTIES -> g = gen; unlock_m()
            :: else -> break             /* still holding m */
            fi };
        barrier_sleep(g, 0);
        g = 0
    od;
    atomic {
        if
        :: broken -> unlock_m(); isbroken = 1
        :: else ->
            count++;
            mygen = gen; arrived[gen]++;
            last = (count == PARTIES);
            unlock_m()
        fi
    };
    if :: isbroken -> goto out :: else fi;
    if
    :: last ->
        /* last to arrive: run the action (m released meanwhile), then
         * release the round */
        atomic {
            lock_m();
            if
            :: gen != mygen -> isbroken = 1          /* aborted meanwhile */
#ifdef BUG_WAKE_FIRST
            :: else -> unlock_m(); futex_wake_all(W_GEN)    /* then next_gen() */
#else
            :: else -> next_gen(0)
#endif
            fi;
            unlock_m()
        };
#ifdef BUG_WAKE_FIRST
        if :: !isbroken -> atomic { lock_m(); next_gen(0); unlock_m() } :: else fi;
#else
        if :: !isbroken -> futex_wake_all(W_GEN) :: else fi;
#endif
        goto out
    :: else
    fi;
    barrier_sleep(mygen, timed);
    if
    :: !ok ->                                        /* timed out: break the round */
        atomic {
            lock_m();
            if :: gen == mygen -> broke = 1; broken = 1; RBROKEN(gen); next_gen(1) :: else fi;
            unlock_m()
        };
        if :: broke -> futex_wake_all(W_GEN) :: else fi   /* (in C under m: same effect) */
    :: else
    fi;
    atomic { lock_m(); isbroken = bhist[mygen]; unlock_m() };
out:
    assert(isbroken || arrived[mygen] == PARTIES);
#ifdef RESET
    assert(isbroken || !rbroken[mygen]);       /* an index only from a round released whole */
#endif
    ndone++
}
