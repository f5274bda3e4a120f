/* ring.c — a ring of bytes in a region of a memfd (a queue's records live in
 * one), and reading and writing a memfd with pread/pwrite.
 *
 * Owns: mapping the ring in this process, copying bytes in and out, growing
 * it in place, moving it (relocate), shrinking an emptied ring that is much
 * larger than its traffic of the last second, and giving pages back. Knows
 * nothing of records or queues: its owner (channel.c) holds a lock around
 * every call but cproc_ring_open/close and the file helpers.
 *
 * The ring never refuses bytes: when they do not fit in the free space the
 * ring grows in place (the file is sparse: only what is used costs memory).
 * The shared state describes the ring twice: a change of place or size fills
 * in the spare description and switches to it with one store of the
 * generation number, so a process killed while it moves the ring leaves the
 * old ring whole, and every process notices that it must map it again.
 */
#include "cproc.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define NOGIL_COPY (256u << 10)
#define FILE_WRITE_OVER (64u << 10)
#define SHRINK_WINDOW_NS (1000000000LL)
#define PUNCH_NOGIL_OVER (UINT64_C(1) << 20)  /* punching this much takes a while */
#define PREFAULT_OVER (256u << 10)

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23          /* Linux 5.14 */
#endif

static inline uint64_t page_size(void) { return (uint64_t)sysconf(_SC_PAGESIZE); }
static inline uint64_t page_round(uint64_t n) { return (n + page_size() - 1) / page_size() * page_size(); }

/* ---- whole-buffer pread/pwrite, GIL released ------------------------------ */

/* A large buffer just allocated for a message is often fresh memory (glibc
 * maps big blocks anew): fault all its pages in with one call instead of
 * one trap per page during the copy (~10x cheaper on a VM). The contents are
 * unchanged; on kernels without MADV_POPULATE_WRITE this does nothing. */
static void prefault(char *buf, size_t n)
{
    uintptr_t page = (uintptr_t)page_size();
    uintptr_t start = ((uintptr_t)buf + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)buf + n) & ~(page - 1);
    if (end > start)
        (void)madvise((void *)start, end - start, MADV_POPULATE_WRITE);
}

static int file_io(int writing, int fd, char *buf, size_t n, uint64_t off)
{
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    if (!writing && n >= PREFAULT_OVER)
        prefault(buf, n);
    while (n > 0) {
        ssize_t r = writing ? pwrite(fd, buf, n, (off_t)off) : pread(fd, buf, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;               /* finish: the caller runs signal handlers after */
        if (r <= 0) {
            err = r < 0 ? errno : EIO;  /* 0: a read past the end of the file */
            break;
        }
        buf += r;
        off += (uint64_t)r;
        n -= (size_t)r;
    }
    Py_END_ALLOW_THREADS
    if (err == 0)
        return 0;
    errno = err;
    PyErr_SetFromErrno(err == ENOSPC || err == ENOMEM ? PyExc_MemoryError : PyExc_OSError);
    return -1;
}

int cproc_file_write(int fd, const void *buf, size_t n, uint64_t off)
{
    return file_io(1, fd, (char *)buf, n, off);
}

int cproc_file_read(int fd, void *buf, size_t n, uint64_t off)
{
    return file_io(0, fd, buf, n, off);
}

void cproc_punch_hole(int fd, uint64_t off, uint64_t len)
{
    /* a failure only means the pages stay until the queue is gone */
    if (len == 0)
        return;
    if (len < PUNCH_NOGIL_OVER) {
        (void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
        return;
    }
    Py_BEGIN_ALLOW_THREADS
    (void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
    Py_END_ALLOW_THREADS
}

/* Make the memfd at least `end` bytes long (the ring is mapped from it),
 * never shorter: what lies beyond the ring's limit stays. */
static int file_extend(const cproc_ring *r, uint64_t end)
{
    struct stat st;
    if (end > r->limit) {
        PyErr_NoMemory();
        return -1;
    }
    if (fstat(r->fd, &st) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if ((uint64_t)st.st_size >= end)
        return 0;
    if (ftruncate(r->fd, (off_t)end) != 0) {
        PyErr_SetFromErrno(errno == EFBIG || errno == ENOSPC ? PyExc_MemoryError : PyExc_OSError);
        return -1;
    }
    return 0;
}

/* ---- mapping -------------------------------------------------------------- */

static void copy_bytes(void *dst, const void *src, size_t n)
{
    if (n >= NOGIL_COPY) {
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, src, n);
        Py_END_ALLOW_THREADS
    } else
        memcpy(dst, src, n);
}

/* Unmap a ring mapping; a large one with the GIL released (tearing down its
 * page tables takes a while). */
static void unmap(char *map, uint64_t size)
{
    if (map == NULL)
        return;
    if (size >= NOGIL_COPY) {
        Py_BEGIN_ALLOW_THREADS
        (void)munmap(map, size);
        Py_END_ALLOW_THREADS
    } else
        (void)munmap(map, size);
}

static inline cproc_ring_desc *ring_spare(const cproc_ring *r)
{
    return &r->sh->desc[(atomic_load_explicit(&r->sh->gen, memory_order_relaxed) + 1) & 1];
}

void cproc_ring_open(cproc_ring *r, cproc_ring_shared *sh, int fd, uint64_t base, uint64_t limit)
{
    *r = (cproc_ring){.sh = sh, .fd = fd, .base = base, .limit = limit};
}

void cproc_ring_create(cproc_ring *r)
{
    atomic_store(&r->sh->gen, 2);       /* 0 is "none" for a process's mapping */
    *cproc_ring_now(r) = (cproc_ring_desc){.off = r->base, .capacity = CPROC_RING_INITIAL};
}

void cproc_ring_close(cproc_ring *r)
{
    if (r->map != NULL)
        (void)munmap(r->map, r->cap);
    r->map = NULL;
    r->gen = 0;
}

/* Use the mapping m of the ring of generation gen. */
static void ring_remap(cproc_ring *r, char *m, uint64_t cap, uint32_t gen)
{
    unmap(r->map, r->cap);
    r->map = m;
    r->cap = cap;
    r->gen = gen;
}

int cproc_ring_sync(cproc_ring *r)
{
    uint32_t gen = atomic_load(&r->sh->gen);
    if (r->gen == gen)
        return 0;
    cproc_ring_desc *d = cproc_ring_now(r);
    char *m = cproc_memfd_map(r->fd, d->capacity, d->off);
    if (m == NULL)
        return -1;
    ring_remap(r, m, d->capacity, gen);
    return 0;
}

/* ---- copying -------------------------------------------------------------- */

/* Copy n bytes to (writing) or from the ring at byte position pos. Ring
 * pages nobody has touched yet are written with pwrite on the memfd
 * (cproc_file_write) rather than through the mapping: the kernel then fills
 * the fresh pages without zeroing them first and without a page fault each.
 * Pages already written (below touched) are copied to directly, which is
 * much faster. */
static int ring_copy(cproc_ring *r, int writing, uint64_t pos, char *buf, size_t n)
{
    cproc_ring_desc *d = cproc_ring_now(r);
    uint64_t cap = r->cap;
    while (n > 0) {
        uint64_t i = pos % cap;
        size_t piece = n < cap - i ? n : (size_t)(cap - i);
        if (!writing)
            copy_bytes(buf, r->map + i, piece);
        else {
            size_t warm = d->touched <= i ? 0 : d->touched - i < piece ? (size_t)(d->touched - i) : piece;
            copy_bytes(r->map + i, buf, warm);
            if (piece - warm >= FILE_WRITE_OVER) {
                if (cproc_file_write(r->fd, buf + warm, piece - warm, d->off + i + warm) < 0)
                    return -1;
            } else
                memcpy(r->map + i + warm, buf + warm, piece - warm);
            if (i + piece > d->touched)
                d->touched = i + piece;
        }
        pos += piece;
        buf += piece;
        n -= piece;
    }
    return 0;
}

int cproc_ring_write(cproc_ring *r, uint64_t pos, const void *src, size_t n)
{
    return ring_copy(r, 1, pos, (char *)src, n);
}

int cproc_ring_read(cproc_ring *r, uint64_t pos, void *dst, size_t n)
{
    return ring_copy(r, 0, pos, dst, n);
}

/* ---- moving --------------------------------------------------------------- */

/* Map the spare descriptor, just filled in, and make it the current ring:
 * one store publishes the move. */
static int ring_switch(cproc_ring *r)
{
    cproc_ring_desc *next = ring_spare(r);
    char *m = cproc_memfd_map(r->fd, next->capacity, next->off);
    if (m == NULL)
        return -1;
    cproc_crash_point(CPROC_DIE_MOVE_BEFORE_SWITCH);
    atomic_fetch_add(&r->sh->gen, 1);
    /* Other processes may still have the old region mapped: they map the new
     * one (cproc_ring_sync) before they touch the ring again. */
    ring_remap(r, m, next->capacity, atomic_load(&r->sh->gen));
    return 0;
}

/* Move the bytes to a region of `new_cap` bytes that does not overlap the
 * current one: at the base of the file when it fits below the ring, else
 * just after it, so ring regions stay within about twice the largest ring.
 * The old region's pages are given back. */
static int ring_relocate(cproc_ring *r, uint64_t new_cap)
{
    cproc_ring_desc *cur = cproc_ring_now(r), *next = ring_spare(r);
    uint64_t used = cur->tail - cur->head, old_off = cur->off, old_cap = cur->capacity;
    uint64_t new_off = r->base + new_cap <= old_off ? r->base : old_off + old_cap;
    if (file_extend(r, new_off + new_cap) < 0)
        return -1;
    /* the bytes, in order, to the start of the new region */
    for (uint64_t done = 0; done < used;) {
        uint64_t i = (cur->head + done) % old_cap;
        uint64_t piece = used - done < old_cap - i ? used - done : old_cap - i;
        if (cproc_file_write(r->fd, r->map + i, (size_t)piece, new_off + done) < 0)
            return -1;
        done += piece;
    }
    *next = (cproc_ring_desc){.off = new_off, .capacity = new_cap, .head = 0, .tail = used, .touched = used};
    if (ring_switch(r) < 0)
        return -1;
    cproc_punch_hole(r->fd, old_off, old_cap);
    return 0;
}

/* Extend the ring to new_cap bytes where it is (nothing else lives after
 * it below the limit): its pages stay; only bytes that wrapped around the
 * old end move, to just after it. */
static int ring_grow_in_place(cproc_ring *r, uint64_t new_cap)
{
    cproc_ring_desc *cur = cproc_ring_now(r), *next = ring_spare(r);
    uint64_t old_cap = cur->capacity, used = cur->tail - cur->head;
    uint64_t first = cur->head % old_cap;
    uint64_t wrapped = first + used > old_cap ? first + used - old_cap : 0;
    if (cur->off > (uint64_t)INT64_MAX - new_cap) {
        PyErr_NoMemory();
        return -1;
    }
    if (file_extend(r, cur->off + new_cap) < 0)
        return -1;
    if (wrapped > 0 && cproc_file_write(r->fd, r->map, (size_t)wrapped, cur->off + old_cap) < 0)
        return -1;
    *next = (cproc_ring_desc){.off = cur->off, .capacity = new_cap, .head = first, .tail = first + used,
                              .touched = wrapped > 0 ? old_cap + wrapped : cur->touched};
    return ring_switch(r);
}

int cproc_ring_reserve(cproc_ring *r, uint64_t need)
{
    cproc_ring_desc *d = cproc_ring_now(r);
    uint64_t used = d->tail - d->head;
    if (need <= d->capacity - used)
        return 0;
    if (need > (uint64_t)INT64_MAX / 4) {
        PyErr_NoMemory();
        return -1;
    }
    uint64_t cap = d->capacity * 2;
    if (cap < used + need)
        cap = page_round(used + need);
    return ring_grow_in_place(r, cap);
}

void cproc_ring_note_used(cproc_ring *r)
{
    cproc_ring_desc *d = cproc_ring_now(r);
    if (d->tail - d->head > r->sh->peak)
        r->sh->peak = d->tail - d->head;
}

/* If, for the last SHRINK_WINDOW_NS, the ring never held more than a quarter
 * of its size, move it to a region twice its peak (at least
 * CPROC_RING_INITIAL), giving the rest of its pages back; a ring sized for
 * its traffic keeps its warm pages. Failing to shrink is harmless. */
int cproc_ring_emptied(cproc_ring *r)
{
    cproc_ring_shared *sh = r->sh;
    int64_t now = cproc_monotonic_ns();
    if (now - sh->window_start < SHRINK_WINDOW_NS)
        return 0;
    uint64_t peak = sh->peak;
    sh->peak = 0;
    sh->window_start = now;
    uint64_t capacity = cproc_ring_now(r)->capacity;
    if (capacity <= CPROC_RING_INITIAL || capacity / 4 < peak)
        return 1;
    uint64_t cap = page_round(2 * peak);
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (ring_relocate(r, cap < CPROC_RING_INITIAL ? CPROC_RING_INITIAL : cap) < 0)
        PyErr_Clear();
    PyErr_Restore(et, ev, tb);
    return 1;
}

/* The whole pages [pos, pos + size) covered, rather than kept for the
 * ring's next turn. */
void cproc_ring_release_pages(cproc_ring *r, uint64_t pos, uint64_t size)
{
    cproc_ring_desc *d = cproc_ring_now(r);
    uint64_t cap = d->capacity, page = page_size();
    while (size > 0) {
        uint64_t i = pos % cap;
        uint64_t n = size < cap - i ? size : cap - i;
        uint64_t start = page_round(i), end = (i + n) / page * page;
        if (end > start)
            cproc_punch_hole(r->fd, d->off + start, end - start);
        pos += n;
        size -= n;
    }
}

void cproc_ring_release_others(cproc_ring *r)
{
    cproc_ring_desc *d = cproc_ring_now(r);
    cproc_punch_hole(r->fd, r->base, d->off - r->base);
    cproc_punch_hole(r->fd, d->off + d->capacity, r->limit - (d->off + d->capacity));
}
