/* condition.pml — Condition, the exact-notify protocol (csrc/condition.c
 * condition_wait, cond_peek, cond_settle, cond_merge, cond_unlock,
 * cond_notify_n).
 *
 * The user's lock L (Lock/RLock) and the internal mutex m are atomic
 * test-and-set locks here (their futex protocol is lock.pml's); a section
 * under m that sleeps nowhere is one atomic step (only seq, bumped inside it
 * once, is read without m... and peek's reads, see below).
 * Under m: G (the generation new waiters join), P, Q (groups < P are done,
 * [P, Q) is the partial group, >= Q the new group), wp/sp (waiters/untaken
 * signals of the partial group), wn (waiters of the new group). The futex
 * word is seq, with a sleepers count.
 *   wait(): under m: g = G, wn++; release L; loop { r = cproc_wait(seq,
 *           peek); under m (cond_settle): done group -> True; partial, r ==
 *           OK and sp > 0 -> take one (sp--, wp--) -> True; partial, r != OK
 *           -> leave the signals to the others (wp--, merge_check) -> False;
 *           new group, r != OK -> wn-- -> False; else loop }; reacquire L
 *   peek:   s = seq, then (reads without m) ready if g < P, or P <= g < Q and
 *           sp > 0; else seen = s. Its reads of P, Q, sp are one step here:
 *           every change of them bumps seq afterwards, so a mixed read either
 *           looks ready (rechecked under m) or sleeps on a stale seq (EAGAIN).
 *   notify(n): under m: signal min(n, wp - sp) of the partial group; if sp ==
 *           wp it is done (P = Q); with n left and wn > 0 the new group becomes
 *           the partial group (G++, Q = G, wp = wn, sp = min(n, wn)); seq++ if
 *           anything changed; then wake every sleeper of seq.
 *   merge_check (cond_merge): if sp == wp: wp = sp = 0, and if P != Q:
 *           P = Q, seq++, wake every sleeper.
 *
 * Ghosts: reg (registered waiters that have not decided), owed (signals
 * given and not yet taken), E (notifies that gave a signal), regE (E when a
 * waiter registered). Checked in every scenario:
 *   exactness:   a notify(n) gives min(n, waiting) signals, waiting = reg - owed;
 *   no stealing: a wait() returning True took a given signal (owed > 0) of a
 *                notify that ran after it registered (E > regE);
 *   no lost wake-up: no invalid end state; every process finishes (LTL, fair).
 * Scenarios (-DSCENARIO=n):
 *   1 WAITFOR (CPython's test_waitfor): the child sets state = 1, notify()s
 *     and at once wait_for()s state == 3; the parent wait_for()s state == 1,
 *     then twice increments state and notify()s. The child's own wait right after
 *     its notify must not take the notify meant for the parent.
 *   2 REPLY: two children wait_for(go); the parent sets go, notify_all()s,
 *     then wait_for()s both acknowledgements (wait with a timeout: -DTIMED),
 *     each child acknowledging with notify() on the same Condition.
 *   3 NOTIFY1: a ticket dispenser: the parent adds a ticket and notify()s,
 *     3 times; W1 takes 2 tickets, W2 one, each wait_for(tickets > 0): two
 *     waiters, one signal, a waiter re-registering while the other still
 *     holds a signal of its group (the partial group).
 * Mutant (must fail): -DBUG_WAKE_K: notify wakes k sleepers, not all (a
 * new-group sleeper can absorb the wake meant for a signalled one).
 * -DTIMED: the child's (1), the parent's (2), W2's (3) waits have a timeout
 * (wait_for(pred, timeout) retried until pred holds).
 * condition_old.pml is the token protocol this replaces; it fails.
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

byte L, m;                       /* holders' _pid + 1 */
byte seq, sleepers;
byte G, P, Q, wp, sp, wn;
byte reg, owed, E;               /* ghosts */
byte state, acks, tickets;       /* the scenarios' shared data */
bit go;
byte ndone;

ltl live { <> (ndone == NPROC) }

inline acquire_L() { atomic { L == 0 -> L = _pid + 1 } }
inline release_L() { L = 0 }

#define WAIT_LOCALS byte g, regE, s; bit ok, timedout, notified, decided, mwake

/* cond_merge + cond_unlock: moved only when done_below changes */
inline merge_check()
{
    if
    :: sp == wp ->
        wp = 0; sp = 0;
        if :: P != Q -> P = Q; seq++; mwake = 1 :: else fi
    :: else
    fi
}

/* wait(), L held; `timed`: with a timeout */
inline cond_wait(timed)
{
    atomic { m == 0 -> g = G; wn++; regE = E; reg++ };  /* under m */
    release_L();
    timedout = 0; decided = 0;
    do
    :: /* cproc_wait(seq, sleepers, peek, deadline) */
        ok = 0;
        do
        :: s = seq;
            ok = (g < P || (P <= g && g < Q && sp > 0));
            if :: ok -> s = 0; break :: else fi;
            MAYBE_DEADLINE(timed);
            if :: timedout -> s = 0; break :: else fi;
            futex_sleep(seq, W_SEQ, s, sleepers, timed, false);
            s = 0
        od;
        if :: !ok -> wake_waiters(W_SEQ, sleepers, 1) :: else fi;   /* pass it on */
        atomic {                                     /* under m */
            m == 0;
            mwake = 0;
            if
            :: g < P -> notified = 1; decided = 1
            :: g >= P && g < Q ->
                if
                :: ok && sp > 0 -> sp--; wp--; notified = 1; decided = 1
                :: ok && sp == 0                     /* another took the last signal */
                :: !ok ->                            /* give up: leave the signals to */
                    wp--; notified = 0; decided = 1; /* the others; if they all hold */
                    merge_check()                    /* one, the group is done */
                fi
            :: g >= Q ->
                if
                :: !ok -> wn--; notified = 0; decided = 1
                :: else
                fi
            fi;
            if
            :: decided ->
                reg--;
                if
                :: notified -> assert(owed > 0); owed--; assert(E > regE)
                :: else
                fi
            :: else
            fi;
            assert(wn + wp - sp == reg - owed)
        };
        if :: mwake -> mwake = 0; wake_waiters_all(W_SEQ, sleepers) :: else fi;
        if :: decided -> break :: else fi
    od;
    g = 0; regE = 0; decided = 0; timedout = 0;
    acquire_L()                                      /* uninterruptibly */
}

/* notify(n), L held */
inline cond_notify(n)
{
    atomic {                                         /* under m */
        m == 0;
        nn = n; k = 0;
        k1 = (nn < wp - sp -> nn : wp - sp);
        sp = sp + k1; nn = nn - k1; k = k1;
        if :: sp == wp -> P = Q; wp = 0; sp = 0 :: else fi;
        if
        :: nn > 0 && wn > 0 ->
            G++; Q = G; wp = wn; sp = (nn < wn -> nn : wn); wn = 0; k = k + sp;
            if :: sp == wp -> P = Q; wp = 0; sp = 0 :: else fi
        :: else
        fi;
        assert(k == (n < reg - owed -> n : reg - owed));     /* exactness */
        owed = owed + k;
        if :: k > 0 -> E++; seq++ :: else fi;
        nn = 0; k1 = 0
    };
#ifdef BUG_WAKE_K
    if :: k > 0 -> wake_waiters(W_SEQ, sleepers, k); k = 0 :: else fi
#else
    if :: k > 0 -> k = 0; wake_waiters_all(W_SEQ, sleepers) :: else fi
#endif
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
