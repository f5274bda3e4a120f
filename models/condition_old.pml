/* condition_old.pml — Condition before commit 3fd93b8 (git show
 * c82aa74:csrc/sync.c: cond_take_token, cond_unregister, condition_wait,
 * cond_notify_n): a token protocol. MUST FAIL: a notify can be taken by a
 * process that started waiting after it (the notifier's own wait included).
 *
 * state packs (waiters, tokens) in one atomic word; seq is the futex word.
 *   wait():   state.waiters++ (L held); release L; cproc_wait(seq, sleepers,
 *             cond_take_token = {seen = seq; CAS (w, t) -> (w - 1, t - 1) if
 *             t > 0}); on a timeout cond_unregister(prefer_token): (w, t) ->
 *             (w - 1, t - take), take = t > 0; reacquire L
 *   notify(n): k = min(n, waiters - tokens) (CAS); tokens += k; seq++;
 *             cproc_wake_waiters(seq, sleepers, k)
 * A token belongs to no waiter in particular: whoever CASes first takes it.
 * Same ghosts, checks and scenarios as condition.pml (see there).
 */
#ifndef SCENARIO
#define SCENARIO 1
#endif
#if SCENARIO == 1
#define NPROC 2
#else
#define NPROC 3
#endif
#define W_SEQ 1
#include "futex.pml"

byte L;
byte seq, sleepers;
byte waiters, tokens;            /* c->state */
byte reg, owed, E;               /* ghosts */
byte state, acks, tickets;
bit go;
byte ndone;

ltl live { <> (ndone == NPROC) }

inline acquire_L() { atomic { L == 0 -> L = _pid + 1 } }
inline release_L() { L = 0 }

#define WAIT_LOCALS byte g, regE, s; bit ok, timedout, notified, decided, mwake

/* ghost bookkeeping of a waiter that leaves, notified or not */
inline leave()
{
    reg--;
    if
    :: notified -> assert(owed > 0); owed--; assert(E > regE)
    :: else
    fi
}

inline cond_wait(timed)
{
    atomic { waiters++; regE = E; reg++ };
    release_L();
    timedout = 0; ok = 0;
    do
    :: s = seq;                                      /* cond_take_token */
        atomic {
            if
            :: tokens > 0 -> tokens--; waiters--; ok = 1; notified = 1; leave()
            :: else
            fi
        };
        if :: ok -> s = 0; break :: else fi;
        MAYBE_DEADLINE(timed);
        if :: timedout -> s = 0; break :: else fi;
        futex_sleep(seq, W_SEQ, s, sleepers, timed, false);
        s = 0
    od;
    if
    :: !ok ->
        wake_waiters(W_SEQ, sleepers, 1);
        atomic {                                     /* cond_unregister(c, 1) */
            notified = (tokens > 0);
            waiters--;
            if :: notified -> tokens-- :: else fi;
            leave()
        }
    :: else
    fi;
    regE = 0; timedout = 0; ok = 0;
    acquire_L()
}

inline cond_notify(n)
{
    atomic {
        k = (n < waiters - tokens -> n : waiters - tokens);
        assert(k == (n < reg - owed -> n : reg - owed));
        tokens = tokens + k;
        owed = owed + k;
        if :: k > 0 -> E++ :: else fi
    };
    if
    :: k > 0 ->
        seq++;
        wake_waiters(W_SEQ, sleepers, k);
        k = 0
    :: else
    fi
}

#define NOTIFY_LOCALS byte nn, k, k1
#define ALL 9
#ifdef TIMED
#define TW 1
#else
#define TW 0
#endif

#if SCENARIO == 1
active proctype Parent()
{
    WAIT_LOCALS; NOTIFY_LOCALS; byte i;
    acquire_L();
    do :: state == 1 -> break :: else -> cond_wait(0) od;
    release_L();
    do
    :: i == 2 -> break
    :: else -> acquire_L(); state++; cond_notify(1); release_L(); i++
    od;
    ndone++
}

active proctype Child()
{
    WAIT_LOCALS; NOTIFY_LOCALS;
    acquire_L();
    state = 1;
    cond_notify(1);
    do :: state == 3 -> break :: else -> cond_wait(TW) od;
    release_L();
    ndone++
}
#endif

#if SCENARIO == 2
active proctype Parent()
{
    WAIT_LOCALS; NOTIFY_LOCALS;
    acquire_L();
    go = 1;
    cond_notify(ALL);
    do :: acks == 2 -> break :: else -> cond_wait(TW) od;
    release_L();
    ndone++
}

active [2] proctype Child()
{
    WAIT_LOCALS; NOTIFY_LOCALS;
    acquire_L();
    do :: go -> break :: else -> cond_wait(0) od;
    acks++;
    cond_notify(1);
    release_L();
    ndone++
}
#endif

#if SCENARIO == 3
active proctype Parent()
{
    NOTIFY_LOCALS; byte i;
    do
    :: i == 3 -> break
    :: else -> acquire_L(); tickets++; cond_notify(1); release_L(); i++
    od;
    ndone++
}

active [2] proctype W()
{
    WAIT_LOCALS; byte j;
    do
    :: j == 2 - (_pid - 1) -> break                  /* W1 (_pid 1): 2 tickets, W2: 1 */
    :: else ->
        acquire_L();
        do :: tickets > 0 -> break :: else -> cond_wait(TW && _pid == 2) od;
        tickets--;
        release_L();
        j++
    od;
    ndone++
}
#endif
