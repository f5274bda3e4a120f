/* shm.c — shared-memory segments, the per-process arena, blocks and handles.
 *
 * A segment is an anonymous memfd ("/memfd:cproc", close-on-exec) mapped
 * MAP_SHARED. It has no name in /dev/shm, so nothing can leak there: the
 * kernel frees it when the last process holding it unmaps it, even when every
 * process is SIGKILLed. Another process attaches a segment by opening
 * /proc/<pid>/fd/<fd> of a process that holds it (same user only, as for a
 * 0600 file) and checking its inode: that is what a handle records
 * (cproc_memfd_*: the one handle scheme, queues use it too).
 *
 * Small objects (locks, events, values) are blocks of 64-byte slots carved
 * from 1 MiB arena segments (sparse: untouched pages cost nothing); a block
 * over 64 KiB gets a segment of its own. Only the process that created a
 * segment allocates and frees in it; a forked child starts arenas of its own.
 * A freed block's generation is cleared, so a stale handle is refused.
 *
 * Never blocks; every system call's result is checked.
 */
#include "cproc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SLOT 64
#define ARENA_SIZE (1u << 20)
#define DEDICATED_OVER (64u << 10)
#define MEMFD_NAME "cproc"
#define MAGIC 0xC9B0C000u

typedef struct {
    _Atomic uint32_t magic;   /* MAGIC | kind while allocated, 0 once freed */
    uint32_t generation;      /* never 0 while allocated */
    uint64_t size;            /* payload bytes */
} block_header;               /* the payload follows, 16-byte aligned */

struct SegmentObject {
    PyObject_HEAD
    cproc_memfd mem;
    char *base;
    size_t size;
    pid_t alloc_pid;          /* the creator: the only process that allocates here */
    int is_arena;
    uint64_t *bitmap;         /* arena slots in use (creator only) */
    size_t nslots, used_slots, hint;
    uint32_t next_generation;
    SegmentObject *cache_next;
};

/* Every segment mapped in this process, so one segment is mapped once. */
static SegmentObject *cache_head;
/* Arena segments this process allocates from (strong references). */
static SegmentObject **arenas;
static size_t n_arenas, cap_arenas;
static pid_t arenas_pid;

static void cache_remove(SegmentObject *seg)
{
    for (SegmentObject **p = &cache_head; *p; p = &(*p)->cache_next)
        if (*p == seg) {
            *p = seg->cache_next;
            return;
        }
}

static SegmentObject *cache_find(dev_t dev, ino_t ino)
{
    for (SegmentObject *s = cache_head; s; s = s->cache_next)
        if (s->mem.dev == dev && s->mem.ino == ino)
            return s;
    return NULL;
}

static void segment_dealloc(SegmentObject *seg)
{
    cache_remove(seg);
    if (seg->base != NULL && munmap(seg->base, seg->size) != 0)
        PyErr_WarnFormat(PyExc_RuntimeWarning, 1, "cproc: munmap failed: %s", strerror(errno));
    cproc_memfd_close(&seg->mem);
    PyMem_Free(seg->bitmap);
    Py_TYPE(seg)->tp_free((PyObject *)seg);
}

PyTypeObject cproc_SegmentType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cproc._cproc.Segment",
    .tp_basicsize = sizeof(SegmentObject),
    .tp_dealloc = (destructor)segment_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A mapped shared-memory segment (internal).",
};

/* ---- memfds and handles -------------------------------------------------- */

void cproc_memfd_close(cproc_memfd *m)
{
    if (m->fd >= 0)
        close(m->fd);
    m->fd = -1;
}

/* Take over fd (closed on failure) and record its identity. */
static int memfd_adopt(cproc_memfd *m, int fd, pid_t origin_pid, int origin_fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(fd);
        return -1;
    }
    *m = (cproc_memfd){.fd = fd, .dev = st.st_dev, .ino = st.st_ino, .size = st.st_size,
                       .origin_pid = origin_pid, .origin_fd = origin_fd};
    return 0;
}

int cproc_memfd_new(cproc_memfd *m, size_t size)
{
    int fd = memfd_create(MEMFD_NAME, MFD_CLOEXEC);
    if (fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (ftruncate(fd, (off_t)size) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(fd);
        return -1;
    }
    return memfd_adopt(m, fd, cproc_pid, fd);
}

/* Open the memfd (dev, ino) that process `pid` holds as fd `fd`, through
 * /proc/<pid>/fd; -1 (no exception) when it no longer holds it. */
static int memfd_open(pid_t pid, int fd, dev_t dev, ino_t ino)
{
    char path[64], target[128];
    if (pid <= 0 || fd < 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
    /* Only open what is one of our memfds: never a FIFO or device that a
     * recycled fd number might now name. The inode check below is the proof. */
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0)
        return -1;
    target[n] = '\0';
    if (strncmp(target, "/memfd:" MEMFD_NAME " ", strlen("/memfd:" MEMFD_NAME " ")) != 0)
        return -1;
    int myfd = open(path, O_RDWR | O_CLOEXEC);
    if (myfd < 0)
        return -1;
    struct stat st;
    if (fstat(myfd, &st) != 0 || st.st_dev != dev || st.st_ino != ino || st.st_size <= 0) {
        close(myfd);
        return -1;
    }
    return myfd;
}

int cproc_memfd_reach(cproc_memfd *m, const cproc_memfd_ref *ref)
{
    pid_t pid = ref->pid1;
    int fd = ref->fd1;
    int myfd = memfd_open(pid, fd, (dev_t)ref->dev, (ino_t)ref->ino);
    if (myfd < 0 && (ref->pid2 != ref->pid1 || ref->fd2 != ref->fd1)) {
        pid = ref->pid2;
        fd = ref->fd2;
        myfd = memfd_open(pid, fd, (dev_t)ref->dev, (ino_t)ref->ino);
    }
    if (myfd < 0)
        return 1;
    return memfd_adopt(m, myfd, pid, fd);
}

void *cproc_memfd_map(int fd, size_t size, uint64_t off)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)off);
    if (p != MAP_FAILED)
        return p;
    PyErr_SetFromErrno(errno == ENOMEM ? PyExc_MemoryError : PyExc_OSError);
    return NULL;
}

/* ---- segments ------------------------------------------------------------- */

/* Map a memfd (taken over; closed on failure) and enter it in the cache;
 * size 0: the whole file. */
static SegmentObject *segment_from_memfd(cproc_memfd *m, size_t size)
{
    if (size == 0)
        size = (size_t)m->size;
    void *base = cproc_memfd_map(m->fd, size, 0);
    if (base == NULL) {
        cproc_memfd_close(m);
        return NULL;
    }
    SegmentObject *seg = PyObject_New(SegmentObject, &cproc_SegmentType);
    if (seg == NULL) {
        munmap(base, size);
        cproc_memfd_close(m);
        return NULL;
    }
    seg->mem = *m;
    seg->base = base;
    seg->size = size;
    seg->alloc_pid = 0;
    seg->is_arena = 0;
    seg->bitmap = NULL;
    seg->nslots = seg->used_slots = seg->hint = 0;
    seg->next_generation = 0;
    seg->cache_next = cache_head;
    cache_head = seg;
    return seg;
}

static SegmentObject *segment_create(size_t size, int is_arena)
{
    cproc_memfd m;
    if (cproc_memfd_new(&m, size) < 0)
        return NULL;
    SegmentObject *seg = segment_from_memfd(&m, size);
    if (seg == NULL)
        return NULL;
    seg->alloc_pid = cproc_pid;
    if (is_arena) {
        seg->is_arena = 1;
        seg->nslots = size / SLOT;
        seg->bitmap = PyMem_Calloc(seg->nslots / 64, sizeof(uint64_t));
        if (seg->bitmap == NULL) {
            Py_DECREF(seg);
            return (SegmentObject *)PyErr_NoMemory();
        }
    }
    return seg;
}

/* ---- arena allocation --------------------------------------------------- */

static inline int bit_get(const uint64_t *bm, size_t i) { return (bm[i / 64] >> (i % 64)) & 1; }
static inline void bit_set(uint64_t *bm, size_t i) { bm[i / 64] |= (uint64_t)1 << (i % 64); }
static inline void bit_clear(uint64_t *bm, size_t i) { bm[i / 64] &= ~((uint64_t)1 << (i % 64)); }

/* First fit from the hint, then from the start. Returns the slot or -1. */
static Py_ssize_t arena_alloc(SegmentObject *seg, size_t nslots)
{
    if (seg->nslots - seg->used_slots < nslots)
        return -1;
    for (int pass = 0; pass < 2; pass++) {
        size_t start = pass == 0 ? seg->hint : 0;
        size_t end = pass == 0 ? seg->nslots : seg->hint + nslots;
        if (end > seg->nslots)
            end = seg->nslots;
        size_t run = 0;
        for (size_t i = start; i < end; i++) {
            if (bit_get(seg->bitmap, i)) {
                run = 0;
                continue;
            }
            if (++run == nslots) {
                size_t first = i + 1 - nslots;
                for (size_t j = first; j <= i; j++)
                    bit_set(seg->bitmap, j);
                seg->used_slots += nslots;
                seg->hint = i + 1;
                return (Py_ssize_t)first;
            }
        }
    }
    return -1;
}

static int arenas_append(SegmentObject *seg)
{
    if (n_arenas == cap_arenas) {
        size_t cap = cap_arenas ? cap_arenas * 2 : 4;
        SegmentObject **a = PyMem_Realloc(arenas, cap * sizeof *a);
        if (a == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        arenas = a;
        cap_arenas = cap;
    }
    Py_INCREF(seg);
    arenas[n_arenas++] = seg;
    return 0;
}

static void arenas_remove(SegmentObject *seg)
{
    for (size_t i = 0; i < n_arenas; i++)
        if (arenas[i] == seg) {
            arenas[i] = arenas[--n_arenas];
            Py_DECREF(seg);
            return;
        }
}

/* A forked child inherits the parent's arena list but must not allocate in
 * the parent's segments: it forgets them (its inherited objects keep their
 * own references). */
static void arenas_adopt_after_fork(void)
{
    if (arenas_pid == cproc_pid)
        return;
    size_t n = n_arenas;
    n_arenas = 0;
    for (size_t i = 0; i < n; i++)
        Py_DECREF(arenas[i]);
    arenas_pid = cproc_pid;
}


int cproc_block_new(cproc_block *b, uint32_t kind, size_t size)
{
    if (size > (size_t)PY_SSIZE_T_MAX - 2 * sizeof(block_header) - 4096) {
        PyErr_NoMemory();
        return -1;
    }
    size_t total = sizeof(block_header) + size;
    SegmentObject *seg = NULL;
    size_t offset = 0;
    if (total > DEDICATED_OVER) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        seg = segment_create((total + page - 1) / page * page, 0);
        if (seg == NULL)
            return -1;
        seg->used_slots = 1;
    } else {
        arenas_adopt_after_fork();
        size_t nslots = (total + SLOT - 1) / SLOT;
        Py_ssize_t slot = -1;
        for (size_t i = 0; i < n_arenas && slot < 0; i++) {
            slot = arena_alloc(arenas[i], nslots);
            if (slot >= 0)
                seg = arenas[i];
        }
        if (slot < 0) {
            seg = segment_create(ARENA_SIZE, 1);
            if (seg == NULL)
                return -1;
            if (arenas_append(seg) < 0) {
                Py_DECREF(seg);
                return -1;
            }
            Py_DECREF(seg);   /* the arena list holds it */
            slot = arena_alloc(seg, nslots);
        }
        Py_INCREF(seg);
        offset = (size_t)slot * SLOT;
        /* A recycled slot holds an old object's bytes. */
        memset(seg->base + offset, 0, nslots * SLOT);
    }
    block_header *h = (block_header *)(seg->base + offset);
    if (++seg->next_generation == 0)
        seg->next_generation = 1;
    h->generation = seg->next_generation;
    h->size = size;
    atomic_store(&h->magic, MAGIC | kind);
    b->seg = seg;
    b->offset = offset;
    b->data = seg->base + offset + sizeof(block_header);
    b->size = size;
    b->owner = 1;
    return 0;
}

void cproc_block_release(cproc_block *b)
{
    SegmentObject *seg = b->seg;
    if (seg == NULL)
        return;
    b->seg = NULL;
    b->data = NULL;
    /* Copies (unpickled handles, also in the creating process) never free;
     * the original frees only in the process that created the segment, not
     * in a forked child that inherited it. */
    if (b->owner && seg->alloc_pid == cproc_pid) {
        block_header *h = (block_header *)(seg->base + b->offset);
        atomic_store(&h->magic, 0);
        h->generation = 0;
        if (seg->is_arena) {
            size_t first = b->offset / SLOT;
            size_t n = (sizeof(block_header) + b->size + SLOT - 1) / SLOT;
            for (size_t i = first; i < first + n; i++)
                bit_clear(seg->bitmap, i);
            seg->used_slots -= n;
            if (first < seg->hint)
                seg->hint = first;
            if (seg->used_slots == 0 && arenas_pid == cproc_pid)
                arenas_remove(seg);   /* an empty arena goes back to the kernel */
        }
    }
    Py_DECREF(seg);
}

/* handle = (kind, generation, offset, size) and the segment's memfd part
 * (CPROC_MEMFD_FMT). */
PyObject *cproc_block_handle(const cproc_block *b)
{
    const SegmentObject *seg = b->seg;
    const block_header *h = (const block_header *)(seg->base + b->offset);
    return Py_BuildValue("(IIKK" CPROC_MEMFD_FMT ")", atomic_load(&h->magic) & 0xFFu, h->generation,
                         (unsigned long long)b->offset, (unsigned long long)b->size,
                         CPROC_MEMFD_HANDLE_ARGS(&seg->mem));
}

int cproc_block_attach(cproc_block *b, PyObject *handle, uint32_t kind)
{
    unsigned int hkind, gen;
    unsigned long long offset, size;
    cproc_memfd_ref ref;
    if (!PyTuple_Check(handle) ||
        !PyArg_ParseTuple(handle, "IIKK" CPROC_MEMFD_FMT ";invalid cproc handle", &hkind, &gen, &offset,
                          &size, CPROC_MEMFD_REF_PTRS(&ref))) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "invalid cproc handle");
        return -1;
    }
    if (hkind != kind) {
        PyErr_SetString(PyExc_TypeError, "cproc handle is for another kind of object");
        return -1;
    }
    SegmentObject *seg = cache_find((dev_t)ref.dev, (ino_t)ref.ino);
    if (seg != NULL)
        Py_INCREF(seg);
    else {
        cproc_memfd m;
        int r = cproc_memfd_reach(&m, &ref);
        if (r > 0)
            PyErr_Format(PyExc_FileNotFoundError,
                         "cannot attach cproc shared memory: no process that held it "
                         "is still running (pid %d, %d) or it was freed", ref.pid1, ref.pid2);
        if (r != 0 || (seg = segment_from_memfd(&m, 0)) == NULL)
            return -1;
    }
    if (offset + sizeof(block_header) + size > seg->size || offset % SLOT != 0) {
        Py_DECREF(seg);
        PyErr_SetString(PyExc_ValueError, "invalid cproc handle: outside its segment");
        return -1;
    }
    const block_header *h = (const block_header *)(seg->base + offset);
    if (atomic_load(&h->magic) != (MAGIC | kind) || h->generation != gen || h->size != size) {
        Py_DECREF(seg);
        PyErr_SetString(PyExc_ValueError,
                        "stale cproc handle: the shared object was freed by the process that created it");
        return -1;
    }
    b->seg = seg;
    b->offset = (size_t)offset;
    b->data = seg->base + offset + sizeof(block_header);
    b->size = (size_t)size;
    b->owner = 0;
    return 0;
}

PyObject *cproc_segments_info(PyObject *module, PyObject *unused)
{
    (void)module; (void)unused;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (SegmentObject *s = cache_head; s; s = s->cache_next) {
        PyObject *d = Py_BuildValue("{s:i,s:n,s:O,s:O,s:n}", "fd", s->mem.fd, "size", (Py_ssize_t)s->size,
                                    "arena", s->is_arena ? Py_True : Py_False,
                                    "created_here", s->alloc_pid == cproc_pid ? Py_True : Py_False,
                                    "used_slots", (Py_ssize_t)s->used_slots);
        if (d == NULL || PyList_Append(list, d) < 0) {
            Py_XDECREF(d);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(d);
    }
    return list;
}

/* ---- SharedBlock: a buffer of shared memory (backs RawValue/RawArray) --- */

typedef SharedObject SharedBlockObject;

PyObject *cproc_shared_attach(PyTypeObject *type, PyObject *handle, uint32_t kind)
{
    SharedObject *self = (SharedObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (cproc_block_attach(&self->blk, handle, kind) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

void cproc_shared_dealloc(PyObject *self)
{
    if (Py_TYPE(self)->tp_weaklistoffset != 0)
        PyObject_ClearWeakRefs(self);
    cproc_block_release(&((SharedObject *)self)->blk);
    Py_TYPE(self)->tp_free(self);
}

PyObject *cproc_shared_reduce(PyObject *self, PyObject *extra)
{
    if (cproc_check_shared(self) < 0)
        return NULL;
    PyObject *handle = cproc_block_handle(&((SharedObject *)self)->blk);
    if (handle == NULL)
        return NULL;
    PyObject *ctor = PyObject_GetAttrString((PyObject *)Py_TYPE(self), "_from_handle");
    if (ctor == NULL) {
        Py_DECREF(handle);
        return NULL;
    }
    PyObject *args = extra ? PySequence_Tuple(extra) : PyTuple_New(0);
    PyObject *full = NULL;
    if (args != NULL) {
        PyObject *h1 = PyTuple_Pack(1, handle);
        if (h1 != NULL)
            full = PySequence_Concat(h1, args);
        Py_XDECREF(h1);
    }
    Py_DECREF(handle);
    Py_XDECREF(args);
    if (full == NULL) {
        Py_DECREF(ctor);
        return NULL;
    }
    return Py_BuildValue("(NN)", ctor, full);
}

static PyObject *sharedblock_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t size;
    static char *kwlist[] = {"size", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n:SharedBlock", kwlist, &size))
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must be >= 0");
        return NULL;
    }
    SharedBlockObject *self = (SharedBlockObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (cproc_block_new(&self->blk, CPROC_KIND_BUFFER, (size_t)size) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *sharedblock_from_handle(PyTypeObject *type, PyObject *handle)
{
    return cproc_shared_attach(type, handle, CPROC_KIND_BUFFER);
}

static int sharedblock_getbuffer(SharedBlockObject *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, self->blk.data, (Py_ssize_t)self->blk.size, 0, flags);
}

static PyObject *sharedblock_reduce(SharedBlockObject *self, PyObject *unused)
{
    (void)unused;
    return cproc_shared_reduce((PyObject *)self, NULL);
}

static Py_ssize_t sharedblock_len(SharedBlockObject *self) { return (Py_ssize_t)self->blk.size; }

static PyObject *sharedblock_address(SharedBlockObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromVoidPtr(self->blk.data);
}

static PyBufferProcs sharedblock_as_buffer = {(getbufferproc)sharedblock_getbuffer, NULL};
static PySequenceMethods sharedblock_as_sequence = {.sq_length = (lenfunc)sharedblock_len};
static PyMethodDef sharedblock_methods[] = {
    {"_from_handle", (PyCFunction)sharedblock_from_handle, METH_O | METH_CLASS,
     "Attach the block a handle names (used by unpickling)."},
    {"__reduce__", (PyCFunction)sharedblock_reduce, METH_NOARGS, NULL},
    {NULL}
};
static PyGetSetDef sharedblock_getset[] = {
    {"address", (getter)sharedblock_address, NULL, "address of the block in this process", NULL},
    {NULL}
};

PyTypeObject cproc_SharedBlockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cproc._cproc.SharedBlock",
    .tp_basicsize = sizeof(SharedBlockObject),
    .tp_dealloc = (destructor)cproc_shared_dealloc,
    .tp_as_buffer = &sharedblock_as_buffer,
    .tp_as_sequence = &sharedblock_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "SharedBlock(size)\n\nA zero-filled block of shared memory exporting the buffer protocol; "
              "pickles to a handle that any process of the same user can attach.",
    .tp_methods = sharedblock_methods,
    .tp_getset = sharedblock_getset,
    .tp_new = sharedblock_new,
};
