/* spin.c — the wait policy: whether, and for how long, a waiter re-checks
 * before it sleeps. Used by the futex wait loop (futex.c) and by
 * Connection.recv's poll (connection.c).
 *
 * Spinning pays when the peer that ends the wait runs at the same time on
 * another CPU and acts within microseconds: it saves a sleep and a wake-up.
 * It costs when the peer cannot run meanwhile (one usable CPU, more runnable
 * processes than CPUs): the spin then burns the time slice the peer needs.
 *
 * 1. No busy spin at all when one CPU is usable: the affinity mask the
 *    process had when cproc was loaded (a forked child keeps its parent's
 *    count, so pinning each process to a CPU of its own still spins, while
 *    `taskset -c 0 python ...` does not), and the cgroup v2 quota (cpu.max,
 *    at every level up to the root), read once per process.
 * 2. Otherwise the budget adapts per waited-on object (glibc's adaptive
 *    mutex, with the estimate's sign fixed): a process-local table keyed by
 *    the object's address holds an EWMA of how long the busy spin needed to
 *    succeed, a wait the spin did not end counting as SPIN_CAP. The budget is
 *    twice that (plus SPIN_MIN) while it stays under SPIN_MAX; otherwise
 *    no busy spin, except that the first wait on the object in each epoch
 *    of the monotonic clock (~8 ms) spins for SPIN_MAX / 2 (a success there
 *    resets the estimate). Epochs are the same in every process, so two
 *    peers that both went to sleeping (each one's waits then include the
 *    other's wake-up, too long to spin for) try spinning again together.
 *    A spin that succeeded only because the peer ran on our CPU meanwhile
 *    counts as a failure: on a shared CPU spinning does not pay. We see
 *    that we were preempted as a gap of more than GAP_NS between two clock
 *    reads of the spin (they are CLOCK_EVERY pauses or one round, well
 *    under 3 µs, apart). The clock is first read CLOCK_FIRST pauses in (a
 *    wait that ends sooner reads no clock and counts as needing no spin);
 *    those rounds are inline (cproc.h), a check after each pause (a lock's
 *    waiter backs off, item 4).
 * 3. Callers that allow it (the futex loop) then yield the CPU a few times
 *    before sleeping: a peer sharing our CPU runs at once, without the
 *    sleep/wake-up system calls. A yield that takes longer than YIELD_SLOW
 *    means something else holds the CPU for whole time slices (a busy
 *    process): this wait sleeps at once, and the object's next
 *    YIELD_SKIP_WAITS waits do not yield.
 * 4. A lock's wait (CPROC_SPIN_LOCK: the pid-word mutex) keeps its own
 *    estimate too (a queue's lock is held for a whole batch), but spins at
 *    least CLOCK_FIRST pauses plus LOCK_SPIN with several usable CPUs, and
 *    yields YIELD_COUNT times however long the yields take. A holder that
 *    runs gives a lock back within about a microsecond, while one preempted
 *    holding it makes a wait of a whole time slice: an estimate mixing the
 *    two would otherwise sleep on every hand-off, and a slow yield is the
 *    holder (or a busy process) running on our CPU, where yielding is what
 *    lets the holder finish. Its spin backs off: each round doubles the
 *    pauses before the next check, up to LOCK_BURST_NS worth (a pause's
 *    length is measured at load). A waiter that checked after every pause
 *    took the lock back each time its holder let go between two critical
 *    sections, and both processes paid the cache line's trip on every
 *    hand-off; backing off lets the holder run a streak of them at cache
 *    speed (two processes taking one Lock in turn: 1.7x faster, RESULTS.md).
 *    multiprocessing's Lock is no fairer: its waiter sleeps in sem_wait().
 * 5. cproc_wait (futex.c) holds the GIL for the first CLOCK_FIRST pauses
 *    only: the rest of the spin and the yields run without it, as the sleep
 *    does, so that the process's other threads are not stalled (the
 *    standard library's ProcessPoolExecutor on cproc's context: its manager
 *    and feeder threads wait on cproc's semaphore and locks).
 */
#include "cproc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UNIT_NS 100                   /* estimates are kept in units of 100 ns */
#define SPIN_MIN (1000 / UNIT_NS)     /* the budget's margin: 1 µs */
#define SPIN_START (4000 / UNIT_NS)   /* a new object's estimate: 4 µs */
#define SPIN_MAX (50000 / UNIT_NS)    /* never spin longer than 50 µs */
#define SPIN_CAP (2 * SPIN_MAX)       /* what a wait the spin did not end counts */
#define EPOCH_SHIFT 23                /* 2^23 ns: ~8 ms */
#define YIELD_COUNT 10
#define YIELD_SLOW_NS (100 * 1000)
#define YIELD_SKIP_WAITS 16
#define LOCK_SPIN (1000 / UNIT_NS)    /* a lock's shortest budget (after CLOCK_FIRST pauses): 1 µs */
#define CLOCK_FIRST 32                /* pauses before the first clock read */
#define CLOCK_EVERY 8                 /* pauses between two clock reads (at least a round) */
#define GAP_NS 5000                   /* clock reads this far apart: we were preempted */

#define LOCK_BURST_NS 640             /* a lock's waiter checks at least this often */
#define LOCK_PAUSES_MAX 256
#define CALIBRATE_TRIES 5
#define CALIBRATE_PAUSES 64

#define SLOTS 256                     /* power of two */

/* A slot: tag (32 bits of the key) << 32 | epoch (8 bits) << 24 |
 * yield skips (8 bits) << 16 | estimate (16 bits). */
static _Atomic uint64_t slots[SLOTS];
static int usable_cpus = 1;           /* set at module load, inherited by fork */
static int lock_pauses = 1;           /* a lock's round at most: set at module load */

static int affinity_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        return CPU_COUNT(&set);
    /* EINVAL: the kernel's mask is larger than cpu_set_t (> 1024 CPUs) */
    int err = errno;
    for (int n = 2 * CPU_SETSIZE; err == EINVAL && n <= 64 * CPU_SETSIZE; n *= 2) {
        cpu_set_t *dyn = CPU_ALLOC(n);
        if (dyn == NULL)
            break;
        size_t size = CPU_ALLOC_SIZE(n);
        int count = -1;
        if (sched_getaffinity(0, size, dyn) == 0)
            count = CPU_COUNT_S(size, dyn);
        else
            err = errno;
        CPU_FREE(dyn);
        if (count > 0)
            return count;
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)(online < INT_MAX ? online : INT_MAX) : 1;
}

/* Read a small file into buf (NUL-terminated); 0, or -1 when unreadable. */
static int read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n;
    do
        n = read(fd, buf, cap - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return 0;
}

/* CPUs the cgroup v2 quota allows (the tightest cpu.max from our group up to
 * the root, rounded up), or 0 when there is no quota or no cgroup v2. */
static int quota_cpus(void)
{
    char buf[4096];
    if (read_small("/proc/self/cgroup", buf, sizeof buf) < 0)
        return 0;
    const char *line = strncmp(buf, "0::", 3) == 0 ? buf : strstr(buf, "\n0::");
    if (line == NULL)
        return 0;
    line += line[0] == '\n' ? 4 : 3;
    char dir[PATH_MAX];
    size_t len = strcspn(line, "\n");
    int w = snprintf(dir, sizeof dir, "/sys/fs/cgroup%.*s", (int)len, line);
    if (w < 0 || (size_t)w >= sizeof dir - sizeof "/cpu.max")
        return 0;
    int best = 0;
    for (;;) {
        size_t dlen = strlen(dir);
        while (dlen > 1 && dir[dlen - 1] == '/')
            dir[--dlen] = '\0';
        char path[PATH_MAX], max[128];
        snprintf(path, sizeof path, "%s/cpu.max", dir);
        long long quota, period;
        if (read_small(path, max, sizeof max) == 0 &&
            sscanf(max, "%lld %lld", &quota, &period) == 2 && quota > 0 && period > 0) {
            long long cpus = (quota + period - 1) / period;
            if (cpus < INT_MAX && (best == 0 || cpus < best))
                best = (int)cpus;
        }
        if (strcmp(dir, "/sys/fs/cgroup") == 0)
            break;
        char *slash = strrchr(dir, '/');
        if (slash == NULL || slash == dir)
            break;
        *slash = '\0';
    }
    return best;
}

/* How many pauses make LOCK_BURST_NS on this CPU: a pause lasts ~10 cycles
 * on older x86 cores and ~140 on Skylake and later (as .NET's SpinWait,
 * measured once; the shortest of a few tries, as a preemption only makes a
 * try longer). */
static int calibrate_lock_pauses(void)
{
    int64_t best = INT64_MAX;
    for (int t = 0; t < CALIBRATE_TRIES; t++) {
        int64_t t0 = cproc_monotonic_ns();
        for (int i = 0; i < CALIBRATE_PAUSES; i++)
            cproc_cpu_relax();
        int64_t d = cproc_monotonic_ns() - t0;
        if (d < best)
            best = d;
    }
    if (best <= 0)
        return LOCK_PAUSES_MAX / 4;   /* a clock too coarse to tell */
    int64_t n = (int64_t)LOCK_BURST_NS * CALIBRATE_PAUSES / best;
    return n < 1 ? 1 : n > LOCK_PAUSES_MAX ? LOCK_PAUSES_MAX : (int)n;
}

void cproc_spin_init(void)
{
    lock_pauses = calibrate_lock_pauses();
    int cpus = affinity_cpus();
    int quota = quota_cpus();
    if (quota > 0 && quota < cpus)
        cpus = quota;
    usable_cpus = cpus > 0 ? cpus : 1;
}

PyObject *cproc_usable_cpus(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromLong(usable_cpus);
}

static inline uint32_t key_tag(const void *key)
{
    uint64_t k = (uint64_t)(uintptr_t)key;
    k ^= k >> 29;
    k *= UINT64_C(0xbf58476d1ce4e5b9);
    k ^= k >> 32;
    return (uint32_t)k | 1;     /* never 0: an empty slot */
}

int cproc_spin_begin(cproc_spinner *s, const void *key, int flags)
{
    uint32_t tag = key_tag(key);
    s->slot = &slots[tag & (SLOTS - 1)];
    s->tag = tag;
    s->lock = (flags & CPROC_SPIN_LOCK) != 0;
    uint64_t v = atomic_load_explicit(s->slot, memory_order_relaxed);
    uint32_t est = SPIN_START, skip = 0, epoch = 0;
    if ((uint32_t)(v >> 32) == tag) {
        est = (uint32_t)(v & 0xffff);
        skip = (uint32_t)(v >> 16) & 0xff;
        epoch = (uint32_t)(v >> 24) & 0xff;
    }
    s->est = est;
    s->yield_skip = s->lock ? 0 : skip;
    s->epoch = epoch;
    s->exploring = 0;
    s->start = 0;               /* the clock is first read CLOCK_FIRST pauses in */
    int64_t budget = 0;
    if (usable_cpus > 1) {
        budget = 2 * (int64_t)est + SPIN_MIN;
        if (budget > SPIN_MAX) {
            budget = 0;
            int64_t now = cproc_monotonic_ns();
            uint32_t current = (uint32_t)(now >> EPOCH_SHIFT) & 0xff;
            if (epoch != current) {
                budget = SPIN_MAX / 2;
                s->exploring = 1;
                s->epoch = current;
                s->start = now;
            }
        }
        if (s->lock && budget < LOCK_SPIN)
            budget = LOCK_SPIN;
    }
    s->budget_ns = budget * UNIT_NS;
    s->spin_until = s->start + s->budget_ns;
    s->last_clock = s->start;
    s->preempted = 0;
    s->rounds = 0;
    s->pauses = 1;
    s->max_pauses = s->lock ? lock_pauses : 1;
    s->next_clock = CLOCK_FIRST;
    s->yields = (flags & CPROC_SPIN_YIELD) && s->yield_skip == 0 ? YIELD_COUNT : 0;
    s->phase = budget > 0 ? 0 : 1;
    return budget > 0 || s->yields > 0;
}

int cproc_spin_step(cproc_spinner *s)
{
    if (s->phase == 0) {
        int64_t now = cproc_monotonic_ns();
        if (s->start == 0) {
            /* the first read: the spin so far (CLOCK_FIRST pauses) counts as 0 */
            s->start = now;
            s->spin_until = now + s->budget_ns;
        } else if (now - s->last_clock > GAP_NS) {
            s->preempted = 1;
        }
        s->last_clock = now;
        if (now < s->spin_until) {
            s->next_clock = s->rounds + CLOCK_EVERY;
            s->rounds += cproc_spin_round(s);
            return 1;
        }
        s->phase = 1;
    }
    if (s->phase == 1 && s->yields > 0) {
        s->yields--;
        int64_t t0 = cproc_monotonic_ns();
        sched_yield();
        if (s->lock || cproc_monotonic_ns() - t0 <= YIELD_SLOW_NS)
            return 1;
        s->yield_skip = YIELD_SKIP_WAITS + 1;   /* this wait counts one */
    }
    s->phase = 2;
    return 0;
}

void cproc_spin_end(cproc_spinner *s)
{
    int64_t needed = SPIN_CAP;
    int spin_paid = 0;
    if (s->phase == 0 && s->start == 0) {
        spin_paid = 1;                      /* ended before the first clock read */
        needed = 0;
    } else if (s->phase == 0) {
        int64_t now = cproc_monotonic_ns();
        if (!s->preempted && now - s->last_clock <= GAP_NS) {
            spin_paid = 1;
            needed = (now - s->start) / UNIT_NS;
            if (needed > SPIN_CAP)
                needed = SPIN_CAP;
        }
    }
    int64_t est = s->est;
    if (s->exploring && spin_paid)         /* spinning pays again */
        est = needed < (SPIN_MAX - SPIN_MIN) / 2 ? needed : (SPIN_MAX - SPIN_MIN) / 2;
    else
        est += (needed - est) / 8;
    if (est < 0)
        est = 0;
    if (est > SPIN_CAP)
        est = SPIN_CAP;
    uint32_t skip = s->yield_skip > 0 ? s->yield_skip - 1 : 0;
    uint64_t v = (uint64_t)s->tag << 32 | (uint64_t)(s->epoch & 0xff) << 24 |
                 (uint64_t)(skip & 0xff) << 16 | (uint64_t)est;
    atomic_store_explicit(s->slot, v, memory_order_relaxed);
}
