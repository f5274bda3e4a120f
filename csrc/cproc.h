/* cproc.h — declarations shared by the C core, one section per file that
 * defines them: the process identity and the futex wait loop (futex.c), the
 * pid-word mutex (mutex.c), argument parsing and error helpers (args.c),
 * shared-memory blocks (shm.c), the synchronisation primitives (semlock.c,
 * event.c, condition.c, barrier.c), processes, connections, queues and
 * their spill blocks, the Pool, plain data and sharedctypes.
 *
 * Naming: cproc_* is visible across files, static helpers are file-local.
 * Every function that can fail sets a Python exception and returns -1/NULL.
 */
#ifndef CPROC_H
#define CPROC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
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
 * counting ourselves in `waiters`, with the GIL released. Returns
 * CPROC_WAIT_OK, CPROC_WAIT_TIMEOUT, or CPROC_WAIT_ERROR with an exception
 * set (a signal handler raised, e.g. KeyboardInterrupt). GIL held on entry. */
int cproc_wait(_Atomic uint32_t *word, _Atomic uint32_t *waiters,
               cproc_try_fn try_fn, cproc_poll_fn poll_fn, void *ctx,
               int64_t deadline);
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
 *     cproc_spin_begin(&sp, object_address, allow_yields);
 *     while (!ready()) if (!cproc_spin_again(&sp)) { sleep until ready(); break; }
 *     cproc_spin_end(&sp);    // once the wait is over (however it ended)
 * Safe without the GIL (the state is process-local atomics). */
typedef struct {
    _Atomic uint64_t *slot;
    uint32_t tag, est, yield_skip, epoch;
    int rounds, yields, phase, exploring, preempted;   /* phase: 0 spinning, 1 yielding, 2 sleeping */
    int64_t start, spin_until, last_clock;
} cproc_spinner;

void cproc_spin_init(void);             /* at module load: the usable CPUs */
PyObject *cproc_usable_cpus(PyObject *module, PyObject *unused);   /* _usable_cpus() */
/* 0 when the policy says sleep at once (no check needed before sleeping). */
int cproc_spin_begin(cproc_spinner *s, const void *key, int allow_yields);
/* After a failed check: 1 check again (after a pause or a yield), 0 sleep now. */
int cproc_spin_again(cproc_spinner *s);
void cproc_spin_end(cproc_spinner *s);

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

/* A new anonymous memfd of `size` bytes (close-on-exec), or -1 with an exception. */
int cproc_memfd_create(size_t size);
/* Open the memfd (dev, ino) that process `pid` holds as fd `fd`, through
 * /proc/<pid>/fd; -1 (no exception) when it no longer holds it. */
int cproc_memfd_open(pid_t pid, int fd, dev_t dev, ino_t ino);

int cproc_block_new(cproc_block *b, uint32_t kind, size_t size);
void cproc_block_release(cproc_block *b);
/* The picklable handle of a block: a tuple of ints, see shm.c. */
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

/* ---- spill.c: large queue records outside the ring ---------------------- */

#define CPROC_SPILL_SLOTS 128
#define CPROC_SPILL_SPAN (UINT64_C(1) << 35)   /* the largest record a block holds */

typedef struct {
    _Atomic uint64_t word;              /* state, and the pid writing or reading the block */
    _Atomic uint64_t warm;              /* bytes at the block's start that may hold pages */
} cproc_spill_slot;

/* pread/pwrite all n bytes at off, GIL released; -1 with an exception. */
int cproc_file_write(int fd, const void *buf, size_t n, uint64_t off);
int cproc_file_read(int fd, void *buf, size_t n, uint64_t off);
/* Where block `slot` starts in the queue's memfd. */
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
/* Give the pages of [off, off + len) of a memfd back (GIL held; released
 * while a large range goes). Failing only keeps the pages. */
void cproc_punch_hole(int fd, uint64_t off, uint64_t len);

/* ---- queue.c ------------------------------------------------------------ */

extern PyTypeObject cproc_QueueType, cproc_JoinableQueueType, cproc_SimpleQueueType;
int cproc_queue_init(PyObject *module);
/* The Pool's transport: records carry a 64-bit tag (task or result id).
 * put_batch pickles each object with `dumps` (NULL: the queues' own; it
 * returns (stream, buffers)) and writes all that pickled in one go; errors[i]
 * is the exception of an object that did not pickle (new reference), else
 * NULL. Returns -1 with an exception when nothing could be written. */
int cproc_queue_put_batch(PyObject *queue, PyObject *const *objs, const uint64_t *tags, Py_ssize_t n,
                          PyObject *dumps, PyObject **errors);
/* Take 1..max records, waiting until `deadline` (0: do not wait). claim
 * (max 1): receives the record's tag under the queue's lock, before the
 * record leaves the ring, so a process killed at any point either left the
 * record queued or has it in its claim. stop_fn (optional) is polled while
 * sleeping; 1 ends the wait. objs[i]: the object (ok[i] 1) or the exception
 * that decoding raised (ok[i] 0), new references. Returns the number taken,
 * 0 on timeout or stop, -1 with an exception. */
Py_ssize_t cproc_queue_take_batch(PyObject *queue, Py_ssize_t max, int64_t deadline, _Atomic uint64_t *claim,
                                  cproc_poll_fn stop_fn, void *stop_ctx,
                                  uint64_t *tags, PyObject **objs, int *ok);

/* ---- pool.c ------------------------------------------------------------- */
int cproc_pool_init(PyObject *module);

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

/* ---- small helpers ------------------------------------------------------ */

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *Py_NewRef(PyObject *o) { Py_INCREF(o); return o; }
#endif

#endif /* CPROC_H */
