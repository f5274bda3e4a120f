/* cproc.h — declarations shared by the C core, one section per file that
 * defines them: the process identity and the futex wait loop (futex.c), the
 * pid-word mutex (mutex.c), argument parsing and error helpers (args.c),
 * shared-memory blocks (shm.c), the synchronisation primitives (semlock.c,
 * event.c, condition.c, barrier.c), processes, connections, the queue's
 * layers (ring.c, spill.c, record.c, channel.c, qlock.c, queue.c), the Pool
 * (pool.c, pool_result.c, pool_limits.c), plain data, sharedctypes, and the lazy imports
 * (module.c).
 *
 * Naming: cproc_* is visible across files, static helpers are file-local.
 * Every function that can fail sets a Python exception and returns -1/NULL.
 */
#ifndef CPROC_H
#define CPROC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- process identity (futex.c) ----------------------------------------- */

/* getpid() is a system call on modern glibc; the hot paths use this copy,
 * refreshed in the child after every fork (pthread_atfork). */
extern pid_t cproc_pid;
int cproc_identity_init(void);
/* The calling thread (pthread_self(), as threading.get_ident()); with the pid
 * it names a lock holder. */
static inline uint64_t cproc_thread_id(void) { return (uint64_t)pthread_self(); }

/* 1 when process `pid` has exited (gone, or a zombie nobody reaped yet). */
int cproc_pid_is_dead(pid_t pid);

/* ---- time and waiting (futex.c) ----------------------------------------- */

/* A deadline is an absolute time on the monotonic clock (ns), or one of: */
#define CPROC_FOREVER ((int64_t)-1)   /* no deadline */
#define CPROC_NOWAIT ((int64_t)0)     /* do not wait at all (where a caller says it takes it) */

int64_t cproc_monotonic_ns(void);

enum { CPROC_WAIT_ERROR = -1, CPROC_WAIT_OK = 0, CPROC_WAIT_TIMEOUT = 1 };

/* try_fn: 1 when the caller got what it waits for; 0 otherwise, with *seen
 * set to the futex word's value that made it fail (we sleep until it changes).
 * poll_fn (optional) runs about every 100 ms while sleeping, and once more at
 * the deadline: 1 ends the wait successfully (dead-holder recovery). */
typedef int (*cproc_try_fn)(void *ctx, uint32_t *seen);
typedef int (*cproc_poll_fn)(void *ctx);

/* The one wait loop of the C core: spin briefly, then sleep on `word`
 * counting ourselves in `waiters`, with the GIL released. `flags`:
 * CPROC_SPIN_LOCK when `word` is a lock's (spin.c: a holder that runs
 * gives it back within microseconds), else 0. Returns
 * CPROC_WAIT_OK, CPROC_WAIT_TIMEOUT, or CPROC_WAIT_ERROR with an exception
 * set (a signal handler raised, e.g. KeyboardInterrupt). GIL held on entry. */
int cproc_wait(_Atomic uint32_t *word, _Atomic uint32_t *waiters,
               cproc_try_fn try_fn, cproc_poll_fn poll_fn, void *ctx,
               int64_t deadline, int flags);
void cproc_futex_wake(_Atomic uint32_t *word, int n);

/* The fd counterpart of cproc_wait: poll(pfds) until one is ready or the
 * deadline passes, GIL released, signal handlers run on EINTR. Returns the
 * number of ready fds, 0 on timeout, -1 with an exception set. */
struct pollfd;
int cproc_poll_until(struct pollfd *pfds, unsigned long n, int64_t deadline);
/* Wake `n` sleepers only if someone sleeps (no system call otherwise). */
static inline void cproc_wake_waiters(_Atomic uint32_t *word, _Atomic uint32_t *waiters, int n)
{
    if (atomic_load(waiters) != 0)
        cproc_futex_wake(word, n);
}

/* ---- the pid-word mutex (mutex.c) --------------------------------------- */

/* A mutex in shared memory held by a process: holder is its pid (0 when
 * free) and the futex word; a waiter takes it over from a holder that died.
 * Zeroed memory is a free mutex. See mutex.c for the protocol. */
typedef struct {
    _Atomic uint32_t holder;
    _Atomic uint32_t waiters;     /* sleeping in cproc_wait on holder */
} cproc_mutex_t;

enum {
    CPROC_MUTEX_ERROR = -1,       /* not taken, exception set (e.g. KeyboardInterrupt) */
    CPROC_MUTEX_TIMEOUT = 0,      /* not taken: deadline passed (CPROC_NOWAIT: it was busy) */
    CPROC_MUTEX_TAKEN = 1,
    CPROC_MUTEX_TAKEN_OVER = 2,   /* taken from a holder that died holding it: repair what it guards */
};

/* One attempt: 1 taken; 0 busy, *seen = the holder. Read before the
 * compare-and-swap: a failing CAS would steal the cache line from the holder. */
static inline int cproc_mutex_try(cproc_mutex_t *m, uint32_t *seen)
{
    uint32_t holder = atomic_load_explicit(&m->holder, memory_order_relaxed);
    if (holder == 0 && atomic_compare_exchange_strong(&m->holder, &holder, (uint32_t)cproc_pid))
        return 1;
    *seen = holder;
    return 0;
}
/* The slow path of cproc_mutex_lock, once m was found busy (mutex.c). */
int cproc_mutex_wait(cproc_mutex_t *m, int64_t deadline, pid_t *dead);

/* Take m, waiting until `deadline` (CPROC_FOREVER, CPROC_NOWAIT or a
 * time). On CPROC_MUTEX_TAKEN_OVER, *dead (when not NULL) is the dead
 * holder's pid. GIL held on entry; released only while asleep. */
static inline int cproc_mutex_lock(cproc_mutex_t *m, int64_t deadline, pid_t *dead)
{
    uint32_t seen;
    return cproc_mutex_try(m, &seen) ? CPROC_MUTEX_TAKEN : cproc_mutex_wait(m, deadline, dead);
}
/* Free m and wake one sleeper; returns the holder it freed (0: not held). */
static inline uint32_t cproc_mutex_unlock(cproc_mutex_t *m)
{
    uint32_t holder = atomic_exchange(&m->holder, 0);
    if (holder != 0)
        cproc_wake_waiters(&m->holder, &m->waiters, 1);
    return holder;
}
/* 1 when `holder` (a pid, 0 = none) is another process, and it exited. */
int cproc_holder_died(uint32_t holder);

/* ---- arguments and errors (args.c) -------------------------------------- */

/* 0 when `initialised`; else -1 with ValueError "<type> object is not
 * initialized" (an object made by __new__ without __init__). The error
 * is raised out of line, by cproc_not_initialized. */
int cproc_not_initialized(PyObject *self);
static inline int cproc_check_init(PyObject *self, int initialised)
{
    return initialised ? 0 : cproc_not_initialized(self);
}
/* The name of self's type without its module, for reprs ("Lock"). */
const char *cproc_short_type_name(PyObject *self);
/* A writable buffer of at least `words` aligned 64-bit words (ValueError
 * "<what>: out of range or misaligned" otherwise, words < 0 included), or
 * NULL with the error set; release `view` after use. */
void *cproc_word_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t words, const char *what);

/* The exception being raised as an instance (its traceback attached), the
 * error indicator cleared; NULL when none is set. */
PyObject *cproc_fetch_exception(void);
/* Parse a METH_FASTCALL|METH_KEYWORDS call against the NULL-terminated
 * `names`; out[i] is the argument or NULL when absent; the first `nrequired`
 * must be given. Error messages as the interpreter's own. */
int cproc_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                     const char *const *names, int nrequired, PyObject **out);
/* Parse one optional argument, positional or by keyword `name`, of a
 * METH_FASTCALL|METH_KEYWORDS method; *value is left alone when absent. */
int cproc_parse_optional_arg(const char *fname, const char *name, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames, PyObject **value);
/* An int argument of _multiprocessing.SemLock() (a Queue's maxsize goes
 * there) as the running Python converts it: *out, or -1 with an exception. */
int cproc_semlock_int_arg(PyObject *o, int *out);

/* timeout (NULL or None: no deadline; else seconds) -> *deadline, as
 * multiprocessing reads it: a negative timeout is 0, NaN is refused. */
int cproc_deadline_from_timeout(PyObject *timeout, int64_t *deadline);

/* The one block/timeout rule. `block` (NULL: absent, True) and `timeout`
 * -> *blocking (1/0) and *deadline. How block is read depends on the
 * multiprocessing call that takes it (flags):
 *   0                  as SemLock.acquire: up to 3.11 an int (TypeError
 *                      otherwise), from 3.12 any object's truth;
 *   CPROC_BLOCK_GET    as Queue.get: `if block and timeout is None` first
 *                      (any true value waits for ever), then as 0;
 * and the timeout:
 *   CPROC_TIMEOUT_NOWAIT  a deadline already past when parsed (timeout
 *                      <= 0) is CPROC_NOWAIT (for callers that take it:
 *                      the queue's take_batch from the Pool's collector). */
enum { CPROC_BLOCK_GET = 1, CPROC_TIMEOUT_NOWAIT = 2 };
int cproc_block_timeout(PyObject *block, PyObject *timeout, int flags, int *blocking, int64_t *deadline);
/* (block=True, timeout=None) parsed from a vectorcall, then as above (flags 0). */
int cproc_parse_block_timeout(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames, int *blocking, int64_t *deadline);
/* `block` alone as SemLock.acquire reads it (flags 0 above): 1/0, -1 error. */
int cproc_blocking_arg(PyObject *block);

/* ---- the wait policy (spin.c) ------------------------------------------ */

/* Whether and how long a waiter re-checks before sleeping (see spin.c):
 *     cproc_spinner sp;
 *     cproc_spin_begin(&sp, object_address, flags);
 *     while (!ready()) if (!cproc_spin_again(&sp)) { sleep until ready(); break; }
 *     cproc_spin_end(&sp);    // once the wait is over (however it ended)
 * Safe without the GIL (the state is process-local atomics). */
typedef struct {
    _Atomic uint64_t *slot;
    uint32_t tag, est, yield_skip, epoch;
    int rounds, next_clock, yields, phase, exploring, preempted, lock;   /* phase: 0 spinning, 1 yielding, 2 sleeping */
    int pauses, max_pauses;              /* of the next round; its cap (1 but for a lock's waiter) */
    int64_t start, spin_until, last_clock, budget_ns;   /* start: 0 until the first clock read */
} cproc_spinner;

void cproc_spin_init(void);             /* at module load: the usable CPUs, a pause's length */
PyObject *cproc_usable_cpus(PyObject *module, PyObject *unused);   /* _usable_cpus() */
/* flags: CPROC_SPIN_YIELD (yield before sleeping), CPROC_SPIN_LOCK (a
 * lock's wait: a floor under the spin, every yield; see spin.c). 0 when the policy says
 * sleep at once (no check needed before sleeping). */
enum { CPROC_SPIN_YIELD = 1, CPROC_SPIN_LOCK = 2 };
int cproc_spin_begin(cproc_spinner *s, const void *key, int flags);
/* The rounds between two clock reads, the yields, the end of the spin. */
int cproc_spin_step(cproc_spinner *s);

static inline void cproc_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
/* A round of the busy spin: s->pauses pauses, inline, doubled for the next
 * round up to s->max_pauses (a lock's waiter backs off, spin.c item 4; every
 * other wait checks after each pause). Returns the pauses made. */
static inline int cproc_spin_round(cproc_spinner *s)
{
    int n = s->pauses;
    for (int i = 0; i < n; i++)
        cproc_cpu_relax();
    if (n < s->max_pauses)
        s->pauses = 2 * n < s->max_pauses ? 2 * n : s->max_pauses;
    return n;
}
/* After a failed check: 1 check again (after a round of pauses or a
 * yield), 0 sleep now. */
static inline int cproc_spin_again(cproc_spinner *s)
{
    if (s->phase == 0 && s->rounds < s->next_clock) {
        s->rounds += cproc_spin_round(s);
        return 1;
    }
    return cproc_spin_step(s);
}
void cproc_spin_end(cproc_spinner *s);
/* Still in the first rounds, before the clock was read (short enough to
 * spend holding the GIL). */
static inline int cproc_spin_inline(const cproc_spinner *s)
{
    return s->phase == 0 && s->start == 0;
}

/* ---- shared memory (shm.c) ---------------------------------------------- */

typedef struct SegmentObject SegmentObject;

/* A block of shared memory owned by one Python object. */
typedef struct {
    SegmentObject *seg;   /* strong reference; NULL when not initialised */
    size_t offset;        /* of the block header inside the segment */
    void *data;           /* the payload */
    size_t size;          /* payload bytes */
    int owner;            /* made by cproc_block_new in this object: only it frees the block */
} cproc_block;

/* Kinds of block, recorded in the block header and in handles. */
enum {
    CPROC_KIND_BUFFER = 1, CPROC_KIND_SEMLOCK, CPROC_KIND_EVENT,
    CPROC_KIND_CONDITION, CPROC_KIND_BARRIER,
};

/* Our descriptor of a memfd, and how we reached it. The one handle scheme
 * of the C core: a handle names a memfd by (dev, ino) and by the pid and fd
 * of up to two processes that hold it (us, and the process we opened it
 * from); another process opens it through /proc/<pid>/fd/<fd>. */
typedef struct {
    int fd;                   /* -1: none */
    dev_t dev;
    ino_t ino;
    off_t size;               /* the file's size when we got it */
    pid_t origin_pid;         /* the process whose fd we opened (ourselves if created) */
    int origin_fd;
} cproc_memfd;

/* A handle's memfd part, CPROC_MEMFD_FMT in PyArg/Py_BuildValue formats. */
typedef struct {
    unsigned long long dev, ino;
    int pid1, fd1, pid2, fd2;
} cproc_memfd_ref;
#define CPROC_MEMFD_FMT "KKiiii"
#define CPROC_MEMFD_REF_PTRS(r) &(r)->dev, &(r)->ino, &(r)->pid1, &(r)->fd1, &(r)->pid2, &(r)->fd2
#define CPROC_MEMFD_HANDLE_ARGS(m) (unsigned long long)(m)->dev, (unsigned long long)(m)->ino, \
    (int)cproc_pid, (m)->fd, (int)(m)->origin_pid, (m)->origin_fd

/* A new anonymous memfd of `size` bytes (close-on-exec); -1 with an exception. */
int cproc_memfd_new(cproc_memfd *m, size_t size);
/* Reach the memfd `ref` names through its first process, else its second:
 * 0; 1 (no exception) when neither still holds it; -1 with an exception. */
int cproc_memfd_reach(cproc_memfd *m, const cproc_memfd_ref *ref);
void cproc_memfd_close(cproc_memfd *m);
/* Map [off, off + size) of the memfd shared, read-write; NULL with an
 * exception (MemoryError for ENOMEM). */
void *cproc_memfd_map(int fd, size_t size, uint64_t off);

int cproc_block_new(cproc_block *b, uint32_t kind, size_t size);
void cproc_block_release(cproc_block *b);
/* The picklable handle of a block (b->seg set): a tuple of ints, see shm.c. */
PyObject *cproc_block_handle(const cproc_block *b);
int cproc_block_attach(cproc_block *b, PyObject *handle, uint32_t kind);

/* Every shared object type starts with PyObject_HEAD, a cproc_block and its
 * weak reference list (as multiprocessing's objects, they can be weakly
 * referenced: set tp_weaklistoffset to offsetof(..., weakreflist)). */
typedef struct {
    PyObject_HEAD
    cproc_block blk;
    PyObject *weakreflist;
} SharedObject;

/* A new, uninitialised instance of `type` attached to the block `handle` names. */
PyObject *cproc_shared_attach(PyTypeObject *type, PyObject *handle, uint32_t kind);
void cproc_shared_dealloc(PyObject *self);
/* __reduce__ of a shared object: (type(self)._from_handle, (handle, *extra)). */
PyObject *cproc_shared_reduce(PyObject *self, PyObject *extra);

extern PyTypeObject cproc_SegmentType;
extern PyTypeObject cproc_SharedBlockType;
PyObject *cproc_segments_info(PyObject *module, PyObject *unused);

/* ---- Lock, RLock, Semaphore, BoundedSemaphore (semlock.c) --------------- */

enum { CPROC_LOCK = 0, CPROC_RLOCK = 1, CPROC_SEMAPHORE = 2 };

/* The shared state of Lock, RLock, Semaphore and BoundedSemaphore. */
typedef struct {
    union {
        cproc_mutex_t mutex;              /* LOCK, RLOCK (mutex.c) */
        struct {
            _Atomic uint32_t value;       /* SEMAPHORE: the counter, the futex word */
            _Atomic uint32_t waiters;     /* sleeping in cproc_wait on value */
        } sem;
    };
    _Atomic uint64_t owner_tid;   /* holder's thread ident (LOCK/RLOCK) */
    uint32_t count;               /* RLOCK recursion depth; touched by the holder only */
    uint32_t kind;
    uint32_t maxvalue;
    uint32_t _pad;
} cproc_semlock_t;

typedef struct {
    PyObject_HEAD
    cproc_block blk;
    PyObject *weakreflist;
    cproc_semlock_t *s;
} SemLockObject;

extern PyTypeObject cproc_SemLockType;
extern PyTypeObject cproc_LockType, cproc_RLockType, cproc_SemaphoreType, cproc_BoundedSemaphoreType;
extern PyObject *cproc_OwnerDiedWarning;
int cproc_semlock_init(PyObject *module);     /* adds OwnerDiedWarning */

/* 1 acquired, 0 timed out / would block (blocking 0), -1 error. */
int cproc_semlock_acquire(SemLockObject *self, int blocking, int64_t deadline);
int cproc_semlock_release(SemLockObject *self);
int cproc_semlock_is_mine(const cproc_semlock_t *s);
/* Give a held Lock/RLock back whatever its depth (no ownership checks);
 * returns the holder it freed, 0 when it was free. */
uint32_t cproc_semlock_unlock(cproc_semlock_t *s);
/* The acquire(block=True, timeout=None) and release() methods (a Condition
 * over a cproc lock forwards its own to them). */
PyObject *cproc_semlock_acquire_method(SemLockObject *self, PyObject *const *args, Py_ssize_t nargs,
                                       PyObject *kwnames);
PyObject *cproc_semlock_release_method(SemLockObject *self, PyObject *unused);

/* 0, or -1 with the "not initialized" error (cproc_check_init) when a
 * shared object (SemLock, Event, Barrier...) has no block: no __init__ yet. */
static inline int cproc_check_shared(PyObject *self)
{
    return cproc_check_init(self, ((SharedObject *)self)->blk.seg != NULL);
}

/* ---- event.c, condition.c, barrier.c ------------------------------------ */

extern PyTypeObject cproc_EventType;
extern PyTypeObject cproc_ConditionType;
extern PyTypeObject cproc_BarrierType;
int cproc_barrier_init(PyObject *module);     /* finds threading.BrokenBarrierError */

/* ---- process.c ---------------------------------------------------------- */

extern PyTypeObject cproc_PopenType;
PyObject *cproc_pidfd_open(PyObject *module, PyObject *arg);
PyObject *cproc_pidfd_send_signal(PyObject *module, PyObject *args);

/* ---- connection.c ------------------------------------------------------- */

PyObject *cproc_wait_fds(PyObject *module, PyObject *args);
extern PyTypeObject cproc_ConnectionType;

/* ---- ring.c: a ring of bytes in a region of a memfd --------------------- */

/* pread/pwrite all n bytes at off, GIL released; -1 with an exception. */
int cproc_file_write(int fd, const void *buf, size_t n, uint64_t off);
int cproc_file_read(int fd, void *buf, size_t n, uint64_t off);
/* Give the pages of [off, off + len) of a memfd back (GIL held; released
 * while a large range goes). Failing only keeps the pages. */
void cproc_punch_hole(int fd, uint64_t off, uint64_t len);

/* Where a ring is and what it holds (byte positions; tail - head <= capacity;
 * ring bytes [0, touched) have been written). */
typedef struct {
    uint64_t off;                       /* file offset of the ring, page aligned */
    uint64_t capacity;                  /* bytes, a multiple of the page size */
    uint64_t head, tail;
    uint64_t touched;
} cproc_ring_desc;

/* A ring's state in shared memory, guarded by its owner's lock. It is
 * described twice: desc[gen & 1] is current; a move fills in the other and
 * bumps gen (one store), by which every process also notices that it must
 * map the ring again. */
typedef struct {
    _Atomic uint32_t gen;
    uint32_t _pad;
    cproc_ring_desc desc[2];
    uint64_t peak;                      /* most bytes held since window_start */
    int64_t window_start;               /* CLOCK_MONOTONIC ns */
} cproc_ring_shared;

/* One process's view of a ring: the shared state and its own mapping. */
typedef struct {
    cproc_ring_shared *sh;
    int fd;                             /* the memfd (not owned) */
    uint64_t base, limit;               /* ring regions lie in [base, limit) of the file */
    char *map;                          /* mapping of the current ring, NULL: none */
    uint64_t cap;
    uint32_t gen;                       /* generation of that mapping, 0: none */
} cproc_ring;

#define CPROC_RING_INITIAL (1u << 20)

/* A view of the ring `sh` of memfd `fd`, mapping nothing yet. */
void cproc_ring_open(cproc_ring *r, cproc_ring_shared *sh, int fd, uint64_t base, uint64_t limit);
/* New shared state: an empty ring of CPROC_RING_INITIAL bytes at base. */
void cproc_ring_create(cproc_ring *r);
void cproc_ring_close(cproc_ring *r);
static inline cproc_ring_desc *cproc_ring_now(const cproc_ring *r)
{
    return &r->sh->desc[atomic_load_explicit(&r->sh->gen, memory_order_relaxed) & 1];
}
/* The rest, lock held: map the ring where the shared state says it is now. */
int cproc_ring_sync(cproc_ring *r);
/* Copy n bytes to / from the ring at byte position pos. */
int cproc_ring_write(cproc_ring *r, uint64_t pos, const void *src, size_t n);
int cproc_ring_read(cproc_ring *r, uint64_t pos, void *dst, size_t n);
/* Make room for `need` more bytes (the ring grows in place). */
int cproc_ring_reserve(cproc_ring *r, uint64_t need);
/* The tail moved: remember the peak for the shrink window. */
void cproc_ring_note_used(cproc_ring *r);
/* The ring has just been emptied: 1 when a shrink window ended (the ring
 * moved to a smaller region if it stayed well below its size), else 0. */
int cproc_ring_emptied(cproc_ring *r);
/* A huge record was taken from [pos, pos + size): give its pages back. */
void cproc_ring_release_pages(cproc_ring *r, uint64_t pos, uint64_t size);
/* After a death: give back the pages of ring regions other than the current. */
void cproc_ring_release_others(cproc_ring *r);

/* ---- spill.c: large queue records outside the ring ----------------------- */

#define CPROC_SPILL_SLOTS 128
#define CPROC_SPILL_SPAN (UINT64_C(1) << 35)   /* the largest record a block holds */

typedef struct {
    _Atomic uint64_t word;              /* state, and the pid writing or reading the block */
    _Atomic uint64_t warm;              /* bytes at the block's start that may hold pages */
} cproc_spill_slot;

/* Where block `slot` starts in the queue's memfd (ring regions lie below block 0). */
uint64_t cproc_spill_offset(int slot);
/* Queue lock held: a free block for `size` bytes, now being written by us;
 * -1 when none is free (no exception: the record goes in the ring). */
int cproc_spill_claim(cproc_spill_slot *slots, int fd, uint64_t size);
/* Queue lock held: the block's record was published / taken by a reader
 * (-1: the block was not queued, the ring is corrupt). */
void cproc_spill_queued(cproc_spill_slot *s);
int cproc_spill_take(cproc_spill_slot *s);
/* The block's writer (put failed) or reader (done) frees it; no lock. */
void cproc_spill_free(cproc_spill_slot *slots, int slot, int fd, uint64_t size);
/* Queue lock held, the queue quiet: give back the kept pages of free blocks. */
void cproc_spill_trim(cproc_spill_slot *slots, int fd);
void cproc_spill_usage(const cproc_spill_slot *slots, int *in_use, uint64_t *warm);
/* Queue lock taken over from a dead holder: in_ring[i] says whether a record
 * in the ring refers to block i; blocks are made to agree (spill.c). */
void cproc_spill_repair(cproc_spill_slot *slots, int fd, const uint8_t *in_ring);

/* ---- record.c: objects to ring records and back ------------------------- */

/* An object ready to be written: its encoding (or itself) and buffer views. */
typedef struct {
    uint32_t kind;
    uint64_t tag;                       /* the Pool's task or result id; 0 for queues */
    PyObject *obj;
    Py_buffer data;
    PyObject *buffer_list;
    Py_ssize_t nbuf;
    Py_buffer *bufs;
    uint64_t size;                      /* payload bytes */
    int spill;                          /* 1 + the block holding the payload; 0: none */
    int spill_queued;                   /* its record is published: the block is the queue's */
} cproc_message;

/* A record taken from the ring, not yet turned into the object it holds:
 * bytes and bytearray objects only (made under the queue lock, they cannot
 * start the garbage collector). */
typedef struct {
    uint32_t kind;
    uint32_t nbuf;
    uint64_t tag;
    PyObject *data;                     /* bytes / bytearray / pickle stream */
    PyObject **buffers;                 /* PyMem array of nbuf out-of-band buffers */
    int spill;                          /* 1 + the block to read data and buffers from; 0: read */
    uint64_t spill_bytes;
} cproc_popped;

/* Encode `obj` (pickled with `dumps`, returning (stream, buffers); NULL: the
 * queues' own cproc.queues._dumps). */
int cproc_message_init(cproc_message *m, PyObject *obj, PyObject *dumps);
void cproc_message_clear(cproc_message *m);
/* Its size in the ring. */
uint64_t cproc_message_record_bytes(const cproc_message *m);
/* Write the record at *at (room reserved), advance *at past it. Lock held. */
int cproc_message_write(cproc_ring *r, const cproc_message *m, uint64_t *at);
/* The bytes a block would hold, 0 when the message stays in the ring. */
uint64_t cproc_message_spill_bytes(const cproc_message *m);
/* Write the message to block `slot` (claimed by us), lock not held; a write
 * refused by a file size limit frees the block and leaves the message to
 * the ring. */
int cproc_message_spill(cproc_message *m, cproc_spill_slot *slots, int fd, int slot);
/* A put that did not publish its message frees the message's block. */
void cproc_message_unspill(cproc_message *m, cproc_spill_slot *slots, int fd);

/* Copy the record at `pos` into p (lock held): its size in the ring, 0 on
 * error (the record stays). Data in a block is read by cproc_popped_fill. */
uint64_t cproc_record_read(cproc_ring *r, cproc_spill_slot *slots, uint64_t pos, cproc_popped *p);
/* The size in the ring of the record at pos, 0 when it cannot be read. */
uint64_t cproc_record_size(cproc_ring *r, uint64_t pos);
/* After a death: the number of whole records in the ring (a tail past a
 * non-record is cut back), in_ring[i] set for each block one refers to. */
uint64_t cproc_records_scan(cproc_ring *r, uint8_t *in_ring);
int cproc_popped_fill(cproc_popped *p, cproc_spill_slot *slots, int fd);
void cproc_popped_unspill(cproc_popped *p, cproc_spill_slot *slots, int fd);
void cproc_popped_clear(cproc_popped *p);
PyObject *cproc_popped_decode(cproc_popped *p);
int cproc_record_init(void);

/* ---- channel.c: a queue in shared memory, without its Python type -------- */

enum { CPROC_Q_QUEUE = 0, CPROC_Q_JOINABLE = 1, CPROC_Q_SIMPLE = 2 };

/* The header page of a queue's memfd. */
typedef struct {
    uint32_t magic;
    int32_t maxsize;                    /* 0: unbounded */
    cproc_mutex_t lock;                 /* the queue's lock (qlock.c, mutex.c) */
    _Atomic uint32_t put_seq;           /* bumped by every put; getters sleep on it */
    _Atomic uint32_t get_waiters;
    _Atomic uint32_t get_seq;           /* bumped by every get; putters of a full queue sleep on it */
    _Atomic uint32_t put_waiters;
    _Atomic uint32_t unfinished;        /* JoinableQueue: put and not yet task_done() */
    _Atomic uint32_t zeros;             /* bumped each time unfinished reaches 0; join() sleeps on it */
    _Atomic uint32_t join_waiters;
    uint32_t kind;                      /* CPROC_Q_*: the class that created it */
    _Atomic uint64_t count;             /* records in the ring */
    /* guarded by lock */
    cproc_ring_shared ring;
    uint32_t spilled_recently;          /* a block was claimed in the ring's shrink window */
    uint32_t needs_repair;              /* a holder died: repair before anything else */
    /* the watcher (SimpleQueue._reader): a pipe readable while count > 0 */
    uint32_t watch_pid;                 /* the process holding its write end; 0: none */
    int32_t watch_fd;                   /* the write end's number there */
    uint64_t watch_ino;                 /* the pipe's inode */
    uint32_t watch_gen;                 /* bumped at every change of watcher */
    cproc_spill_slot spill[CPROC_SPILL_SLOTS];
} cproc_queue_header;

/* One process's handle on a queue's shared memory. */
typedef struct {
    cproc_memfd mem;                    /* our descriptor of the memfd */
    cproc_queue_header *hdr;            /* NULL until initialised */
    cproc_ring ring;                    /* this process's view of the ring */
    int watch_wfd;                      /* the watch pipe's write end we registered, -1: none */
    int watch_rfd;                      /* and its read end (ours, non-blocking) */
    int notify_fd;                      /* our descriptor of the watcher's pipe, -1: none, -2: retry */
    uint32_t notify_gen;                /* the watch_gen notify_fd was opened for */
} cproc_channel;

void cproc_channel_zero(cproc_channel *ch);
int cproc_channel_create(cproc_channel *ch, int32_t maxsize, uint32_t kind);
/* Attach the queue a handle's memfd part names; FileNotFoundError when no
 * process that held it is still running, TypeError when it is not a queue
 * of `kind`. */
int cproc_channel_attach(cproc_channel *ch, const cproc_memfd_ref *ref, uint32_t kind);
void cproc_channel_release(cproc_channel *ch);
/* Register our pipe (wfd, rfd: its ends, rfd non-blocking) as the queue's
 * watcher: from then on it is readable exactly while the queue holds a
 * record (channel.c, "the watcher's pipe"); unwatch stops that if our pipe
 * is still the registered one. watch_sync: set the pipe from the count,
 * lock held (qlock.c's repair); watch_poll_sync: the same, taking the lock
 * (a byte a get in another process left is drained). */
int cproc_channel_watch(cproc_channel *ch, int wfd, int rfd);
int cproc_channel_unwatch(cproc_channel *ch);
void cproc_channel_watch_sync(cproc_channel *ch);
int cproc_channel_watch_poll_sync(cproc_channel *ch);
/* Put n messages, all or none, waiting for room until `deadline` when
 * blocking: 0 done, 1 no room in time (no exception), -1 error. */
int cproc_channel_put(cproc_channel *ch, cproc_message *msgs, Py_ssize_t n, int blocking, int64_t deadline);
/* Take 1..max records into *out (a PyMem array of *n), waiting until
 * `deadline` when blocking. claim: receives the first record's tag under
 * the lock, before it leaves the ring. stop_fn (optional) is polled while
 * sleeping; 1 ends the wait. 0 taken, 1 nothing in time, 2 stopped, -1 error. */
int cproc_channel_take(cproc_channel *ch, Py_ssize_t max, int blocking, int64_t deadline,
                       _Atomic uint64_t *claim, cproc_poll_fn stop_fn, void *stop_ctx,
                       cproc_popped **out, Py_ssize_t *n);

/* The Pool's transport: records carry a 64-bit tag (task or result id).
 * put_batch pickles each object with `dumps` (NULL: the queues' own; it
 * returns (stream, buffers)) and writes all that pickled in one go; errors[i]
 * is the exception of an object that did not pickle (new reference), else
 * NULL. Returns -1 with an exception when nothing could be written. */
int cproc_channel_put_batch(cproc_channel *ch, PyObject *const *objs, const uint64_t *tags, Py_ssize_t n,
                            PyObject *dumps, PyObject **errors);
/* Take 1..max records, waiting until `deadline` (CPROC_NOWAIT: do not wait); claim and
 * stop_fn as cproc_channel_take. objs[i]: the object (ok[i] 1) or the
 * exception that decoding raised (ok[i] 0), new references. Returns the
 * number taken, 0 on timeout or stop, -1 with an exception. */
Py_ssize_t cproc_channel_take_batch(cproc_channel *ch, Py_ssize_t max, int64_t deadline, _Atomic uint64_t *claim,
                                    cproc_poll_fn stop_fn, void *stop_ctx,
                                    uint64_t *tags, PyObject **objs, int *ok);

/* ---- qlock.c: the queue's lock, its crash repair, the tests' crash points */

/* Take the lock (waiting until `deadline`) and map the current ring; a lock
 * taken over from a dead holder gets the queue repaired first. 1 taken, 0
 * timed out, -1 error. */
int cproc_qlock_acquire(cproc_channel *ch, int64_t deadline);
void cproc_qlock_release(cproc_channel *ch);

/* Queue._die_at(name, signum) arms one crash point in this process: the
 * tests kill a process at each instant where a death leaves work for the
 * repair. */
enum { CPROC_DIE_NOWHERE, CPROC_DIE_PUT_BEFORE_TAIL, CPROC_DIE_PUT_BEFORE_COUNT, CPROC_DIE_GET_BEFORE_HEAD,
       CPROC_DIE_GET_BEFORE_COUNT, CPROC_DIE_MOVE_BEFORE_SWITCH, CPROC_DIE_REPAIR };
extern const char *const cproc_die_point_names[];
extern int cproc_die_at, cproc_die_signal;
static inline void cproc_crash_point(int point)
{
    if (cproc_die_at == point)
        (void)raise(cproc_die_signal);
}

/* ---- queue.c: Queue, JoinableQueue, SimpleQueue ------------------------- */

extern PyTypeObject cproc_QueueType, cproc_JoinableQueueType, cproc_SimpleQueueType;
int cproc_queue_init(PyObject *module);
/* The channel of an open cproc queue (TypeError, ValueError or OSError as
 * the queue's own methods otherwise). */
cproc_channel *cproc_queue_channel(PyObject *queue);

/* ---- pool.c, pool_result.c, pool_limits.c ------------------------------- */
int cproc_pool_init(PyObject *module);
int cproc_pool_result_init(PyObject *module);
int cproc_pool_limits_init(PyObject *module);
#define CPROC_POOL_KILL_BIT ((uint64_t)1 << 62)  /* in a worker's slot: killed for its task's hard limit
                                                  * (cproc.pool reads 62 as _cproc.POOL_KILL_BIT) */
#define CPROC_POOL_TIMING_WORDS 4                /* per worker: hard deadline, hard limit, soft deadline, soft task */
/* (soft, hard) seconds, each a positive number or None, as ns (0: none). */
int cproc_pool_limits_ns(PyObject *limits, int64_t ns[2]);
/* This worker process's timing words (NULL: none), for pool_soft_fired. */
void cproc_pool_limits_attach(_Atomic int64_t *timing);
/* Around one task: its limits (the record's, else pool_limits) into ns and
 * its deadlines into timing; _end clears them. -1 with an error set: the
 * task must not run. */
int cproc_pool_limits_begin(PyObject *task, const int64_t pool_limits[2], uint64_t tag,
                            _Atomic int64_t *timing, int64_t ns[2]);
void cproc_pool_limits_end(_Atomic int64_t *timing, const int64_t ns[2]);
/* This process's resident set size in bytes, or -1 (OSError set). */
int64_t cproc_pool_rss_bytes(void);
/* Deliver task tid's outcome to `target` (an ApplyResult, a MapResult, or
 * an object with a _deliver(tid, ok, value) method). */
int cproc_pool_result_deliver(PyObject *target, uint64_t tid, int ok, PyObject *value);

/* ---- plain.c ------------------------------------------------------------ */

/* Encode plain data into buf: the length, 0 when obj is not plain data or
 * does not fit (no exception), -1 on error. */
Py_ssize_t cproc_plain_encode(PyObject *obj, char *buf, Py_ssize_t cap);
PyObject *cproc_plain_decode(const char *buf, Py_ssize_t len);

/* ---- sharedctypes.c ----------------------------------------------------- */

extern PyTypeObject cproc_SynchronizedBaseType;
extern PyTypeObject cproc_SynchronizedType;
extern PyTypeObject cproc_SynchronizedArrayType;
extern PyTypeObject cproc_SynchronizedStringType;
int cproc_sharedctypes_init(PyObject *module);

/* ---- small helpers; lazy imports (module.c) ----------------------------- */

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *Py_NewRef(PyObject *o) { Py_INCREF(o); return o; }
#endif

/* A Python name the C core imports on first use (module.c): the table ends
 * with {NULL}. cproc_import_names fills every slot once (the last slot set
 * means all are); -1 with the exception, every slot cleared, when one fails. */
typedef struct {
    const char *module, *name;
    PyObject **slot;
} cproc_import_name;
int cproc_import_names(const cproc_import_name *names);

#endif /* CPROC_H */
