/*
 * mpevent._native: the shared-memory arena and its parking lot, in C.
 *
 * Why C: the hot paths (wait on one record, set, clear) must cost about as
 * much as a bare semaphore round trip (~12 us here).  Done from Python with
 * ctypes they take ten foreign calls (~0.8 us each) per side; here they are
 * one call each, and the GIL is released only around the sleep.
 *
 * Why these pieces:
 *   - A record's guard is a robust, process-shared pthread mutex: the kernel
 *     hands it to the next locker with EOWNERDEAD when its holder dies, so a
 *     SIGKILLed process can never leave a record locked.
 *   - Waiters sleep on a futex word of their own *slot* (one slot per
 *     waiting thread, not per record), so a thread can wait on many records
 *     at once (the hub, mpevent.wait) and records cost no kernel object.
 *   - A record's state is one 32-bit word: bit 0 is the flag, bits 1..31 a
 *     generation bumped by every set().  One aligned store publishes both,
 *     so a crash leaves either the old or the new state, never half; a
 *     waiter returns True when the generation moved, even if clear() has
 *     already reset the flag (CPython's test_set_and_clear).
 *   - set() dequeues every waiter it wakes (as trio's ParkingLot.unpark
 *     does), so a waiter that died while parked costs the next set() one
 *     futex wake and is then gone.
 *   - Parked waiters re-read the generation after POLL_NS, then at doubling
 *     intervals up to POLL_MAX_NS: if a setter was killed after publishing
 *     the state but before waking everyone, the waiters still return within
 *     about a second.
 *   - No Python object that the garbage collector tracks is created while
 *     a lock is held: a collection could run a finalizer that releases a
 *     record and needs that same lock.
 *
 * Layout of a segment (all integers native-endian; offsets in bytes):
 *
 *   | offset            | size               | what                          |
 *   |-------------------|--------------------|-------------------------------|
 *   | 0                 | sizeof(Header)     | Header (below)                |
 *   | ATTACH_OFFSET     | ATTACH_ENTRIES*16  | attach table, owned by Python |
 *   | slots_offset      | slot_capacity*32   | Slot[]                        |
 *   | links_offset      | link_capacity*32   | Link[]; link i < slot_capacity|
 *   |                   |                    | is slot i's own link          |
 *   | records_offset    | record_capacity*128| Record[]                      |
 *   | heap_offset       | heap_capacity      | value blocks, 64 B .. 64 KiB  |
 *   | held_offset       | ATTACH_ENTRIES *   | per attached process: a bit   |
 *   |                   |   held_stride      | per record it holds a         |
 *   |                   |                    | reference to                  |
 *
 * Index fields that point into a list hold index+1 so that 0 means "none".
 *
 * Who holds a record: its refcount counts processes (plus pickles in flight
 * and names), and each process also sets its bit in the held bitmap of its
 * attach-table entry.  The count goes up before the bit is set and down
 * after it is cleared, so a process dying in between can only leak a
 * reference, never give one back twice.  When a process is found dead, the
 * one that finds it releases every record whose bit it had set.
 *
 * A record's payload holds two ValueSlots (AsyncResult's value and its
 * exception), each a descriptor of a pickled form that lives inline (up to
 * 16 bytes), in a heap block of the arena (a power of two from 64 B to
 * 64 KiB, from per-size free lists), or in a segment of its own (larger;
 * Python names, writes and unlinks those, C only stores the id).  A slot is
 * replaced and read under the record's lock, and a replaced heap block is
 * freed under that lock, so a reader never sees a block being reused.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x31544e4556504d00ULL /* "\0MPEVNT1" */
#define LAYOUT_VERSION 5u
#define RECORD_SIZE 128u
#define PAYLOAD_SIZE 48u
#define ATTACH_OFFSET 4096u
#define ATTACH_ENTRIES 1024u
#define ATTACH_ENTRY_SIZE 16u
#define POLL_NS 250000000LL      /* first re-read of the generation: 0.25 s */
#define POLL_MAX_NS 1000000000LL /* then doubling up to 1 s: at most ~1 wakeup/s idle */
#define WAKE_BATCH 64
#define LOCK_SPINS 200 /* trylock attempts before sleeping on a busy lock */

#define HEAP_MIN_SHIFT 6
#define HEAP_CLASSES 11
#define HEAP_MAX (1u << (HEAP_MIN_SHIFT + HEAP_CLASSES - 1)) /* 64 KiB */

#define SPARE_SEGMENTS 8
#define SPARE_BYTES_MAX (256ull << 20) /* resident bytes kept for reuse */

#define VALUE_NONE 0u
#define VALUE_INLINE 1u
#define VALUE_HEAP 2u
#define VALUE_SEGMENT 3u
#define VALUE_INLINE_MAX 16u

#define STATE_FLAG 1u
#define GENERATION(state) ((state) >> 1)

#define KIND_FREE 0u

#define LINK_QUEUED 1u
#define LINK_OWNED 2u /* an extra link, allocated by link_alloc for l->slot */

typedef struct {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t record_size;
    uint32_t record_capacity;
    uint32_t slot_capacity;
    uint32_t link_capacity;
    uint32_t record_bump;  /* records [0, bump) have been initialised */
    uint32_t record_free;  /* free list head, index+1 */
    uint32_t records_live;
    uint32_t slot_bump;
    uint32_t slot_free;
    uint32_t slots_live;
    uint32_t link_bump;
    uint32_t link_free;
    uint32_t links_live;
    uint32_t serial;       /* bumped by every record allocation */
    uint32_t recoveries;   /* locks taken over from dead holders */
    uint64_t slots_offset;
    uint64_t links_offset;
    uint64_t records_offset;
    uint64_t heap_offset;
    uint64_t heap_capacity;
    uint64_t heap_bump;          /* bytes of the heap ever carved */
    uint64_t heap_used;          /* bytes in live blocks */
    uint64_t heap_free[HEAP_CLASSES]; /* free block offsets, 0 = none */
    uint64_t spare_id[SPARE_SEGMENTS];   /* value segments kept for reuse, 0 = none */
    uint64_t spare_size[SPARE_SEGMENTS];
    uint64_t spare_bytes;
    uint64_t held_offset;
    uint64_t held_stride;        /* bytes of one entry's bitmap, page aligned */
    uint64_t total_size;
    pthread_mutex_t lock;  /* guards allocation and the attach table */
} Header;

typedef struct {
    uint32_t word;      /* futex: 0 parked, 1 woken */
    uint32_t in_use;
    uint32_t pid;
    uint32_t next_free; /* index+1 */
    uint32_t pad[4];
} Slot;

typedef struct {
    uint32_t next;      /* next link in the record's waiter list, index+1 */
    uint32_t slot;
    uint32_t record;
    uint32_t flags;     /* LINK_QUEUED while in a waiter list, LINK_OWNED */
    uint32_t fired;     /* set to 1 by the setter that dequeued it */
    uint32_t next_free; /* index+1 */
    uint32_t pad[2];
} Link;

typedef struct {
    pthread_mutex_t lock;
    uint32_t state;     /* generation << 1 | flag */
    uint32_t waiters;   /* head of the waiter list, link index+1 */
    uint32_t refcount;  /* processes holding it + pickles in flight */
    uint32_t inflight;  /* pickles not yet unpickled */
    uint32_t kind;      /* KIND_FREE or the kind given at allocation */
    uint32_t serial;    /* allocation serial: stale handles do not match */
    uint32_t next_free; /* index+1 */
    uint32_t pad;
    unsigned char payload[PAYLOAD_SIZE];
} Record;

typedef struct {
    uint8_t tag;        /* VALUE_NONE, VALUE_INLINE, VALUE_HEAP, VALUE_SEGMENT */
    uint8_t pad[3];
    uint32_t length;    /* bytes of the stored form */
    union {
        uint8_t bytes[VALUE_INLINE_MAX];
        uint64_t location; /* heap offset, or segment id */
    } where;
} ValueSlot;

_Static_assert(sizeof(ValueSlot) * 2 == PAYLOAD_SIZE, "ValueSlot layout");
_Static_assert(sizeof(Slot) == 32, "Slot layout");
_Static_assert(sizeof(Link) == 32, "Link layout");
_Static_assert(sizeof(Record) <= RECORD_SIZE, "Record layout");
_Static_assert(sizeof(Header) <= ATTACH_OFFSET, "Header layout");

typedef struct {
    PyObject_HEAD
    Py_ssize_t size;
    char *base;
    Header *header;
    Slot *slots;
    Link *links;
    char *records;
} ArenaObject;

/* ------------------------------------------------------------------ */
/* futex and time                                                      */

static long
futex_wait(uint32_t *word, uint32_t expected, long long timeout_ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(timeout_ns / 1000000000LL);
    ts.tv_nsec = (long)(timeout_ns % 1000000000LL);
    return syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0);
}

static void
futex_wake_all(uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static long long
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* locating things                                                     */

static inline Record *
record_at(ArenaObject *a, uint32_t index)
{
    return (Record *)(a->records + (size_t)index * RECORD_SIZE);
}

static int
check_record(ArenaObject *a, unsigned long index)
{
    if (index >= a->header->record_bump) {
        PyErr_Format(PyExc_ValueError, "record index %lu is outside the arena", index);
        return -1;
    }
    return 0;
}

static int
check_slot(ArenaObject *a, unsigned long slot)
{
    if (slot >= a->header->slot_bump || !a->slots[slot].in_use) {
        PyErr_Format(PyExc_ValueError, "slot %lu is not allocated", slot);
        return -1;
    }
    return 0;
}

/* Convert a Python int argument to a slot index that is allocated. */
static int
parse_slot(ArenaObject *a, PyObject *arg, unsigned long *slot)
{
    *slot = PyLong_AsUnsignedLong(arg);
    if (*slot == (unsigned long)-1 && PyErr_Occurred()) return -1;
    return check_slot(a, *slot);
}

static int
check_link(ArenaObject *a, unsigned long link)
{
    if (link >= a->header->link_bump && link >= a->header->slot_capacity) {
        PyErr_Format(PyExc_ValueError, "link %lu is not allocated", link);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* robust mutexes                                                      */

static int
mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (rc == 0) rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (rc == 0) rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (rc == 0) rc = pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
    return rc;
}

static void wake_fired(ArenaObject *a, Record *r, uint32_t *wake, int *nwake);
static inline Record *parse_record(ArenaObject *self, PyObject *arg);

/*
 * Lock without holding the GIL while blocked: the holder may be another
 * thread of this process that needs the GIL to finish.  Returns 0, or -1
 * with an exception set.  A lock taken over from a dead holder is made
 * consistent; `repair` (may be NULL) restores the record's invariant.
 */
static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int
lock_mutex(ArenaObject *a, pthread_mutex_t *m, Record *repair)
{
    int rc = pthread_mutex_trylock(m);
    /* Critical sections are a few hundred nanoseconds: spinning a little
     * beats sleeping in the kernel and waiting to be scheduled again (the
     * robust mutex type never spins by itself). */
    for (int spin = 0; rc == EBUSY && spin < LOCK_SPINS; spin++) {
        cpu_relax();
        rc = pthread_mutex_trylock(m);
    }
    if (rc == EBUSY) {
        Py_BEGIN_ALLOW_THREADS
        rc = pthread_mutex_lock(m);
        Py_END_ALLOW_THREADS
    }
    if (rc == EOWNERDEAD) {
        pthread_mutex_consistent(m);
        __atomic_add_fetch(&a->header->recoveries, 1, __ATOMIC_RELAXED);
        if (repair != NULL && (repair->state & STATE_FLAG)) {
            /* The dead holder published the flag but may not have woken
             * everyone: finish its set(). Waking under the lock is fine here. */
            uint32_t wake[WAKE_BATCH];
            int n = 0;
            wake_fired(a, repair, wake, &n);
            for (int i = 0; i < n; i++) futex_wake_all(&a->slots[wake[i]].word);
        }
        rc = 0;
    }
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static inline void
unlock_mutex(pthread_mutex_t *m)
{
    pthread_mutex_unlock(m);
}

/* ------------------------------------------------------------------ */
/* waiter lists (record lock held)                                     */

static void
enqueue_link(ArenaObject *a, Record *r, uint32_t record, uint32_t link, uint32_t slot)
{
    Link *l = &a->links[link];
    l->slot = slot;
    l->record = record;
    l->fired = 0;
    l->flags = (l->flags & LINK_OWNED) | LINK_QUEUED;
    l->next = r->waiters;
    /* Publishing the head is the single store that puts the link in. */
    __atomic_store_n(&r->waiters, link + 1, __ATOMIC_RELEASE);
}

/* Returns 1 if the link was queued and is now removed. */
static int
remove_link(ArenaObject *a, Record *r, uint32_t link)
{
    Link *l = &a->links[link];
    if (!(l->flags & LINK_QUEUED)) return 0;
    uint32_t *prev = &r->waiters;
    uint32_t guard = a->header->link_capacity;
    while (*prev != 0 && guard--) {
        if (*prev == link + 1) {
            __atomic_store_n(prev, l->next, __ATOMIC_RELEASE);
            l->flags &= ~LINK_QUEUED;
            return 1;
        }
        prev = &a->links[*prev - 1].next;
    }
    l->flags &= ~LINK_QUEUED;
    return 0;
}

/*
 * Dequeue every waiter, mark it fired and set its slot's word; collect the
 * slots to wake after unlocking.  The word is written under the lock so a
 * waiter that finds itself dequeued knows no later write to its slot from
 * this record can arrive (its next wait may reuse the slot at once).
 */
static void
wake_fired(ArenaObject *a, Record *r, uint32_t *wake, int *nwake)
{
    uint32_t next = r->waiters;
    uint32_t guard = a->header->link_capacity;
    __atomic_store_n(&r->waiters, 0, __ATOMIC_RELEASE);
    while (next != 0 && guard--) {
        Link *l = &a->links[next - 1];
        next = l->next;
        l->flags &= ~LINK_QUEUED;
        __atomic_store_n(&l->fired, 1, __ATOMIC_RELEASE);
        Slot *s = &a->slots[l->slot];
        __atomic_store_n(&s->word, 1, __ATOMIC_RELEASE);
        if (*nwake < WAKE_BATCH) {
            wake[(*nwake)++] = l->slot;
        } else {
            futex_wake_all(&s->word);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Arena object                                                        */

/*
 * Arena(fd, size): map the segment behind fd.  The caller may close fd at
 * once: unlike mmap.mmap, we keep no duplicate descriptor, so a process
 * holds one mapping per arena and no descriptor.
 */
static int
Arena_init(ArenaObject *self, PyObject *args, PyObject *kwds)
{
    int fd;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "in:Arena", &fd, &size)) return -1;
    if (self->base != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Arena is already initialised");
        return -1;
    }
    if ((size_t)size < ATTACH_OFFSET + ATTACH_ENTRIES * ATTACH_ENTRY_SIZE) {
        PyErr_Format(PyExc_ValueError, "a segment of %zd bytes is too small to hold an arena",
                     size);
        return -1;
    }
    void *base;
    Py_BEGIN_ALLOW_THREADS
    base = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    Py_END_ALLOW_THREADS
    if (base == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->base = base;
    self->size = size;
    self->header = (Header *)self->base;
    return 0;
}

static int
Arena_getbuffer(ArenaObject *self, Py_buffer *view, int flags)
{
    if (self->base == NULL) {
        PyErr_SetString(PyExc_ValueError, "Arena is not mapped");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->base, self->size, 0, flags) < 0)
        return -1;
    return 0;
}

static PyBufferProcs Arena_as_buffer = {(getbufferproc)Arena_getbuffer, NULL};

static void
Arena_bind(ArenaObject *self)
{
    Header *h = self->header;
    self->slots = (Slot *)(self->base + h->slots_offset);
    self->links = (Link *)(self->base + h->links_offset);
    self->records = self->base + h->records_offset;
}

static void
Arena_dealloc(ArenaObject *self)
{
    /* Buffers hold a reference to us, so none is exported any more. */
    if (self->base != NULL) munmap(self->base, (size_t)self->size);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

typedef struct {
    uint64_t slots_offset, links_offset, records_offset, heap_offset, held_offset;
    uint64_t held_stride, total;
} Layout;

static uint64_t
page_align(uint64_t offset)
{
    return (offset + 4095) & ~(uint64_t)4095;
}

/* The one place the offsets of a segment are computed. */
static Layout
compute_layout(uint64_t records, uint64_t slots, uint64_t links, uint64_t heap)
{
    Layout l;
    l.slots_offset = ATTACH_OFFSET + ATTACH_ENTRIES * ATTACH_ENTRY_SIZE;
    l.links_offset = l.slots_offset + slots * sizeof(Slot);
    l.records_offset = page_align(l.links_offset + links * sizeof(Link));
    l.heap_offset = page_align(l.records_offset + records * RECORD_SIZE);
    l.held_offset = page_align(l.heap_offset + heap);
    l.held_stride = page_align((records + 63) / 64 * 8);
    l.total = l.held_offset + (uint64_t)ATTACH_ENTRIES * l.held_stride;
    return l;
}

static int
parse_capacities(PyObject *args, const char *format, unsigned int *records,
                 unsigned int *slots, unsigned int *links, unsigned long long *heap)
{
    if (!PyArg_ParseTuple(args, format, records, slots, links, heap)) return -1;
    if (*slots == 0 || *records == 0 || *links < *slots) {
        PyErr_SetString(PyExc_ValueError, "arena capacities must be positive and links >= slots");
        return -1;
    }
    return 0;
}

/* segment_size(records, slots, links, heap) -> bytes an arena needs. */
static PyObject *
native_segment_size(PyObject *module, PyObject *args)
{
    unsigned int records, slots, links;
    unsigned long long heap;
    if (parse_capacities(args, "IIIK:segment_size", &records, &slots, &links, &heap) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(compute_layout(records, slots, links, heap).total);
}

static PyObject *
Arena_format(ArenaObject *self, PyObject *args)
{
    unsigned int records, slots, links;
    unsigned long long heap;
    if (parse_capacities(args, "IIIK:format", &records, &slots, &links, &heap) < 0) return NULL;
    Layout layout = compute_layout(records, slots, links, heap);
    uint64_t total = layout.total;
    if (total > (uint64_t)self->size) {
        PyErr_Format(PyExc_ValueError, "arena needs %llu bytes, buffer has %zd",
                     (unsigned long long)total, self->size);
        return NULL;
    }
    Header *h = self->header;
    memset(h, 0, sizeof(Header));
    h->layout_version = LAYOUT_VERSION;
    h->record_size = RECORD_SIZE;
    h->record_capacity = records;
    h->slot_capacity = slots;
    h->link_capacity = links;
    h->link_bump = slots; /* links below slot_capacity belong to their slot */
    h->slots_offset = layout.slots_offset;
    h->links_offset = layout.links_offset;
    h->records_offset = layout.records_offset;
    h->heap_offset = layout.heap_offset;
    h->heap_capacity = heap;
    h->held_offset = layout.held_offset;
    h->held_stride = layout.held_stride;
    h->total_size = total;
    int rc = mutex_init(&h->lock);
    if (rc != 0) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    /* The magic goes last: an attacher that sees it sees a whole header. */
    __atomic_store_n(&h->magic, MAGIC, __ATOMIC_RELEASE);
    Arena_bind(self);
    return PyLong_FromUnsignedLongLong(total);
}

static PyObject *
Arena_validate(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    Header *h = self->header;
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != MAGIC) {
        PyErr_SetString(PyExc_ValueError, "segment is not an mpevent arena (bad magic)");
        return NULL;
    }
    if (h->layout_version != LAYOUT_VERSION || h->record_size != RECORD_SIZE) {
        PyErr_Format(PyExc_ValueError, "arena layout %u is not the layout %u of this mpevent",
                     h->layout_version, LAYOUT_VERSION);
        return NULL;
    }
    if (h->total_size > (uint64_t)self->size) {
        PyErr_SetString(PyExc_ValueError, "arena segment is shorter than its header says");
        return NULL;
    }
    Arena_bind(self);
    Py_RETURN_NONE;
}

static PyObject *
Arena_lock(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    if (lock_mutex(self, &self->header->lock, NULL) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Arena_unlock(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    unlock_mutex(&self->header->lock);
    Py_RETURN_NONE;
}

static PyObject *
Arena_statistics(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    Header *h = self->header;
    return Py_BuildValue(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:K,s:K,s:K}",
        "records_live", h->records_live, "record_capacity", h->record_capacity,
        "slots_live", h->slots_live, "slot_capacity", h->slot_capacity,
        "links_live", h->links_live, "link_capacity", h->link_capacity,
        "recoveries", h->recoveries, "total_size", (unsigned long long)h->total_size,
        "heap_used", (unsigned long long)h->heap_used,
        "heap_carved", (unsigned long long)h->heap_bump);
}

/* Append *item* (a new reference, or NULL after an error) to *list* and
 * drop the reference.  Returns -1 with an exception set on failure. */
static int
append_new(PyObject *list, PyObject *item)
{
    if (item == NULL) return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

/* --- held bitmaps --------------------------------------------------- */

static uint64_t *
held_words(ArenaObject *a, unsigned long entry)
{
    return (uint64_t *)(a->base + a->header->held_offset + entry * a->header->held_stride);
}

static int
check_entry(unsigned long entry)
{
    if (entry >= ATTACH_ENTRIES) {
        PyErr_Format(PyExc_ValueError, "attach entry %lu is outside the table", entry);
        return -1;
    }
    return 0;
}

/* Convert a Python int argument to an attach-table entry index. */
static int
parse_entry(ArenaObject *a, PyObject *arg, unsigned long *entry)
{
    *entry = PyLong_AsUnsignedLong(arg);
    if (*entry == (unsigned long)-1 && PyErr_Occurred()) return -1;
    return check_entry(*entry);
}

/* held_mark(entry, index, held): set or clear the bit of record `index`. */
static PyObject *
Arena_held_mark(ArenaObject *self, PyObject *args)
{
    unsigned long entry, index;
    int held;
    if (!PyArg_ParseTuple(args, "kkp:held_mark", &entry, &index, &held)) return NULL;
    if (check_entry(entry) < 0 || check_record(self, index) < 0) return NULL;
    uint64_t *word = held_words(self, entry) + index / 64;
    uint64_t bit = (uint64_t)1 << (index % 64);
    /* Atomic: threads of the process mark records sharing a word. */
    if (held)
        __atomic_fetch_or(word, bit, __ATOMIC_RELEASE);
    else
        __atomic_fetch_and(word, ~bit, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

/* held_indices(entry) -> [index]: the records an entry's process holds. */
static PyObject *
Arena_held_indices(ArenaObject *self, PyObject *arg)
{
    unsigned long entry;
    if (parse_entry(self, arg, &entry) < 0) return NULL;
    PyObject *indices = PyList_New(0);
    if (indices == NULL) return NULL;
    uint64_t *words = held_words(self, entry);
    uint64_t count = (self->header->record_bump + 63) / 64;
    for (uint64_t w = 0; w < count; w++) {
        uint64_t bits = __atomic_load_n(&words[w], __ATOMIC_ACQUIRE);
        while (bits) {
            int b = __builtin_ctzll(bits);
            bits &= bits - 1;
            if (append_new(indices, PyLong_FromUnsignedLongLong(w * 64 + b)) < 0) {
                Py_DECREF(indices);
                return NULL;
            }
        }
    }
    return indices;
}

/* held_wipe(entry): clear an entry's bitmap and give its pages back. */
static PyObject *
Arena_held_wipe(ArenaObject *self, PyObject *arg)
{
    unsigned long entry;
    if (parse_entry(self, arg, &entry) < 0) return NULL;
    void *start = held_words(self, entry);
    /* MADV_REMOVE punches the pages out of the tmpfs file: zeros, no memory. */
    if (madvise(start, self->header->held_stride, MADV_REMOVE) != 0)
        memset(start, 0, self->header->held_stride);
    Py_RETURN_NONE;
}

/* --- heap ---------------------------------------------------------- */

static int
heap_class(uint32_t nbytes)
{
    int cls = 0;
    while (((uint32_t)1 << (HEAP_MIN_SHIFT + cls)) < nbytes) cls++;
    return cls;
}

/* Arena lock held.  Returns the block's offset in the segment, or 0. */
static uint64_t
heap_take(ArenaObject *a, uint32_t nbytes)
{
    Header *h = a->header;
    int cls = heap_class(nbytes);
    uint64_t size = (uint64_t)1 << (HEAP_MIN_SHIFT + cls);
    uint64_t offset = h->heap_free[cls];
    if (offset != 0) {
        h->heap_free[cls] = *(uint64_t *)(a->base + offset);
    } else if (h->heap_bump + size <= h->heap_capacity) {
        offset = h->heap_offset + h->heap_bump;
        h->heap_bump += size;
    } else {
        return 0;
    }
    h->heap_used += size;
    return offset;
}

/* Arena lock held. */
static void
heap_give(ArenaObject *a, uint64_t offset, uint32_t nbytes)
{
    Header *h = a->header;
    int cls = heap_class(nbytes);
    *(uint64_t *)(a->base + offset) = h->heap_free[cls];
    h->heap_free[cls] = offset;
    h->heap_used -= (uint64_t)1 << (HEAP_MIN_SHIFT + cls);
}

/*
 * Spare value segments: a large value's segment, once its value is gone,
 * is kept (up to SPARE_SEGMENTS and SPARE_BYTES_MAX) for the next large
 * value instead of being unlinked.  Its pages are already resident, so the
 * next writer skips allocating and zeroing them: that, not the copy, is
 * most of the cost of a fresh 32 MiB segment.
 */

/* spare_put(id, size) -> bool: True if kept (else the caller unlinks it). */
static PyObject *
Arena_spare_put(ArenaObject *self, PyObject *args)
{
    unsigned long long id, size;
    if (!PyArg_ParseTuple(args, "KK:spare_put", &id, &size)) return NULL;
    if (id == 0) {
        PyErr_SetString(PyExc_ValueError, "segment id 0 is reserved");
        return NULL;
    }
    Header *h = self->header;
    if (lock_mutex(self, &h->lock, NULL) < 0) return NULL;
    int kept = 0;
    if (h->spare_bytes + size <= SPARE_BYTES_MAX) {
        for (int i = 0; i < SPARE_SEGMENTS; i++) {
            if (h->spare_id[i] == 0) {
                h->spare_id[i] = id;
                h->spare_size[i] = size;
                h->spare_bytes += size;
                kept = 1;
                break;
            }
        }
    }
    unlock_mutex(&h->lock);
    return PyBool_FromLong(kept);
}

/* spare_take(min_size, max_size) -> (id, size) of a kept segment, or None. */
static PyObject *
Arena_spare_take(ArenaObject *self, PyObject *args)
{
    unsigned long long min_size, max_size;
    if (!PyArg_ParseTuple(args, "KK:spare_take", &min_size, &max_size)) return NULL;
    Header *h = self->header;
    if (lock_mutex(self, &h->lock, NULL) < 0) return NULL;
    int best = -1;
    for (int i = 0; i < SPARE_SEGMENTS; i++) {
        uint64_t size = h->spare_size[i];
        if (h->spare_id[i] != 0 && size >= min_size && size <= max_size &&
            (best < 0 || size < h->spare_size[best]))
            best = i;
    }
    uint64_t id = 0, size = 0;
    if (best >= 0) {
        id = h->spare_id[best];
        size = h->spare_size[best];
        h->spare_bytes -= size;
        h->spare_id[best] = 0;
        h->spare_size[best] = 0;
    }
    unlock_mutex(&h->lock);
    /* No Python object is created under a lock: the garbage collector could
     * run finalizers that need it. */
    if (best < 0) Py_RETURN_NONE;
    return Py_BuildValue("KK", (unsigned long long)id, (unsigned long long)size);
}

/* Free the heap blocks a payload points to.  Record lock held. */
static int
release_values(ArenaObject *a, ValueSlot *slots, int count)
{
    int any = 0;
    for (int i = 0; i < count; i++) any |= slots[i].tag == VALUE_HEAP;
    if (!any) return 0;
    if (lock_mutex(a, &a->header->lock, NULL) < 0) return -1;
    for (int i = 0; i < count; i++) {
        if (slots[i].tag == VALUE_HEAP) {
            heap_give(a, slots[i].where.location, slots[i].length);
            slots[i].tag = VALUE_NONE;
        }
    }
    unlock_mutex(&a->header->lock);
    return 0;
}

/* --- records ------------------------------------------------------ */

static PyObject *
Arena_record_alloc(ArenaObject *self, PyObject *args)
{
    unsigned int kind;
    if (!PyArg_ParseTuple(args, "I:record_alloc", &kind)) return NULL;
    if (kind == KIND_FREE) {
        PyErr_SetString(PyExc_ValueError, "kind 0 means free");
        return NULL;
    }
    Header *h = self->header;
    if (lock_mutex(self, &h->lock, NULL) < 0) return NULL;
    uint32_t index;
    Record *r;
    if (h->record_free != 0) {
        index = h->record_free - 1;
        r = record_at(self, index);
        h->record_free = r->next_free;
    } else if (h->record_bump < h->record_capacity) {
        index = h->record_bump;
        r = record_at(self, index);
        memset(r, 0, RECORD_SIZE);
        int rc = mutex_init(&r->lock);
        if (rc != 0) {
            unlock_mutex(&h->lock);
            errno = rc;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        h->record_bump = index + 1;
    } else {
        unlock_mutex(&h->lock);
        Py_RETURN_NONE; /* full: the caller opens another arena */
    }
    r->state = 0;
    r->waiters = 0;
    r->refcount = 1;
    r->inflight = 0;
    r->next_free = 0;
    memset(r->payload, 0, PAYLOAD_SIZE);
    r->serial = ++h->serial;
    r->kind = kind;
    h->records_live++;
    unlock_mutex(&h->lock);
    return Py_BuildValue("II", index, r->serial);
}

/* Take a reference for a handle.  adopt=1: take over a pickle's reference. */
static PyObject *
Arena_record_retain(ArenaObject *self, PyObject *args)
{
    unsigned long index;
    unsigned int serial;
    int adopt;
    if (!PyArg_ParseTuple(args, "kIp:record_retain", &index, &serial, &adopt)) return NULL;
    if (check_record(self, index) < 0) return NULL;
    Record *r = record_at(self, (uint32_t)index);
    if (lock_mutex(self, &r->lock, r) < 0) return NULL;
    if (r->kind == KIND_FREE || r->serial != serial) {
        unlock_mutex(&r->lock);
        PyErr_Format(PyExc_LookupError,
                     "record %lu (serial %u) no longer exists: every process holding it has "
                     "dropped it", index, serial);
        return NULL;
    }
    if (adopt && r->inflight > 0) {
        r->inflight--;
    } else {
        r->refcount++;
    }
    unsigned int kind = r->kind;
    unlock_mutex(&r->lock);
    return PyLong_FromUnsignedLong(kind);
}

/* A pickle of a handle holds a reference until it is unpickled. */
static PyObject *
Arena_record_pin(ArenaObject *self, PyObject *args)
{
    unsigned long index;
    if (!PyArg_ParseTuple(args, "k:record_pin", &index)) return NULL;
    if (check_record(self, index) < 0) return NULL;
    Record *r = record_at(self, (uint32_t)index);
    if (lock_mutex(self, &r->lock, r) < 0) return NULL;
    r->refcount++;
    r->inflight++;
    unlock_mutex(&r->lock);
    Py_RETURN_NONE;
}

/* Drop a reference; returns the payload bytes if the record was freed. */
static PyObject *
Arena_record_release(ArenaObject *self, PyObject *args)
{
    unsigned long index;
    if (!PyArg_ParseTuple(args, "k:record_release", &index)) return NULL;
    if (check_record(self, index) < 0) return NULL;
    Header *h = self->header;
    Record *r = record_at(self, (uint32_t)index);
    if (lock_mutex(self, &r->lock, r) < 0) return NULL;
    if (r->kind == KIND_FREE || r->refcount == 0) {
        unlock_mutex(&r->lock);
        PyErr_Format(PyExc_RuntimeError, "record %lu released more often than retained", index);
        return NULL;
    }
    if (--r->refcount > 0) {
        unlock_mutex(&r->lock);
        Py_RETURN_NONE;
    }
    if (release_values(self, (ValueSlot *)r->payload, 2) < 0) {
        unlock_mutex(&r->lock);
        return NULL;
    }
    PyObject *payload = PyBytes_FromStringAndSize((const char *)r->payload, PAYLOAD_SIZE);
    r->kind = KIND_FREE;
    unlock_mutex(&r->lock);
    if (payload == NULL) return NULL;
    if (lock_mutex(self, &h->lock, NULL) < 0) {
        Py_DECREF(payload);
        return NULL;
    }
    r->next_free = h->record_free;
    h->record_free = (uint32_t)index + 1;
    h->records_live--;
    unlock_mutex(&h->lock);
    return payload;
}

static PyObject *
Arena_record_info(ArenaObject *self, PyObject *args)
{
    unsigned long index;
    if (!PyArg_ParseTuple(args, "k:record_info", &index)) return NULL;
    if (check_record(self, index) < 0) return NULL;
    Record *r = record_at(self, (uint32_t)index);
    unsigned int waiters = 0;
    if (lock_mutex(self, &r->lock, r) < 0) return NULL;
    uint32_t next = r->waiters;
    uint32_t guard = self->header->link_capacity;
    while (next != 0 && guard--) {
        waiters++;
        next = self->links[next - 1].next;
    }
    Record copy = *r;
    unlock_mutex(&r->lock);
    /* Built after unlocking: creating a dict may run the garbage collector,
     * whose finalizers may need this very lock. */
    return Py_BuildValue(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "kind", copy.kind, "serial", copy.serial,
        "flag", copy.state & STATE_FLAG, "generation", GENERATION(copy.state),
        "refcount", copy.refcount, "inflight", copy.inflight, "waiters", waiters);
}

/* record_lock(index): take a record's lock and keep it.  Fault tests and
 * debugging only: nothing else may hold a record lock across calls. */
static PyObject *
Arena_record_lock(ArenaObject *self, PyObject *arg)
{
    Record *r = parse_record(self, arg);
    if (r == NULL) return NULL;
    if (lock_mutex(self, &r->lock, r) < 0) return NULL;
    Py_RETURN_NONE;
}

/* record_half_set(index): what a setter killed mid-set() leaves behind: the
 * lock taken and the new state published, nobody dequeued or woken.  Fault
 * tests only; the caller is meant to die right after. */
static PyObject *
Arena_record_half_set(ArenaObject *self, PyObject *arg)
{
    Record *r = parse_record(self, arg);
    if (r == NULL) return NULL;
    if (lock_mutex(self, &r->lock, r) < 0) return NULL;
    uint32_t state = r->state;
    __atomic_store_n(&r->state, ((GENERATION(state) + 1) << 1) | STATE_FLAG, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

/* --- state -------------------------------------------------------- */

static inline Record *
parse_record(ArenaObject *self, PyObject *arg)
{
    unsigned long index = PyLong_AsUnsignedLong(arg);
    if (index == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (check_record(self, index) < 0) return NULL;
    return record_at(self, (uint32_t)index);
}

static PyObject *
Arena_is_set(ArenaObject *self, PyObject *arg)
{
    Record *r = parse_record(self, arg);
    if (r == NULL) return NULL;
    /* A plain load: no lock, no system call. */
    return PyBool_FromLong(__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) & STATE_FLAG);
}

static PyObject *
Arena_state(ArenaObject *self, PyObject *arg)
{
    Record *r = parse_record(self, arg);
    if (r == NULL) return NULL;
    return PyLong_FromUnsignedLong(__atomic_load_n(&r->state, __ATOMIC_ACQUIRE));
}

/*
 * set(index): raise the flag and wake every waiter.  Returns True if this
 * call raised it.  Never blocks on the waiters: it only writes their words
 * and issues futex wakes.
 */
static PyObject *
Arena_set(ArenaObject *self, PyObject *arg)
{
    Record *r = parse_record(self, arg);
    if (r == NULL) return NULL;
    if (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) & STATE_FLAG) Py_RETURN_FALSE;
    if (lock_mutex(self, &r->lock, r) < 0) return NULL;
    uint32_t state = r->state;
    if (state & STATE_FLAG) {
        unlock_mutex(&r->lock);
        Py_RETURN_FALSE;
    }
    /* New generation and the flag in one store, before anyone wakes. */
    __atomic_store_n(&r->state, ((GENERATION(state) + 1) << 1) | STATE_FLAG, __ATOMIC_RELEASE);
    uint32_t wake[WAKE_BATCH];
    int n = 0;
    wake_fired(self, r, wake, &n);
    unlock_mutex(&r->lock);
    for (int i = 0; i < n; i++) futex_wake_all(&self->slots[wake[i]].word);
    Py_RETURN_TRUE;
}

/*
 * Store `incoming` in slot `which` of a record, raise the flag with a new
 * generation and wake every waiter.  The replaced slot's heap block, if
 * any, is freed here; returns the old descriptor (bytes) so the caller can
 * drop an old segment.
 */
static PyObject *
publish_slot(ArenaObject *self, uint32_t index, int which, const ValueSlot *incoming)
{
    Record *r = record_at(self, index);
    if (lock_mutex(self, &r->lock, r) < 0) return NULL;
    ValueSlot *slot = (ValueSlot *)r->payload + which;
    ValueSlot old = *slot;
    *slot = *incoming;
    /* The descriptor is complete before the state store makes it visible. */
    uint32_t state = r->state;
    __atomic_store_n(&r->state, ((GENERATION(state) + 1) << 1) | STATE_FLAG, __ATOMIC_RELEASE);
    uint32_t wake[WAKE_BATCH];
    int n = 0;
    wake_fired(self, r, wake, &n);
    ValueSlot freed = old;
    int failed = release_values(self, &freed, 1);
    unlock_mutex(&r->lock);
    for (int i = 0; i < n; i++) futex_wake_all(&self->slots[wake[i]].word);
    if (failed < 0) return NULL;
    return PyBytes_FromStringAndSize((const char *)&old, sizeof old);
}

static int
check_which(int which)
{
    if (which != 0 && which != 1) {
        PyErr_SetString(PyExc_ValueError, "which must be 0 (value) or 1 (exception)");
        return -1;
    }
    return 0;
}

/*
 * publish_segment(index, which, id, length) -> old descriptor: point slot
 * `which` at a value segment (written by Python) and publish it; see
 * publish_slot.
 */
static PyObject *
Arena_publish_segment(ArenaObject *self, PyObject *args)
{
    unsigned long index;
    int which;
    unsigned long long id;
    unsigned int length;
    if (!PyArg_ParseTuple(args, "kiKI:publish_segment", &index, &which, &id, &length))
        return NULL;
    if (check_record(self, index) < 0 || check_which(which) < 0) return NULL;
    ValueSlot incoming;
    memset(&incoming, 0, sizeof incoming);
    incoming.tag = VALUE_SEGMENT;
    incoming.length = length;
    incoming.where.location = id;
    return publish_slot(self, (uint32_t)index, which, &incoming);
}

/*
 * store(index, which, data) -> old descriptor, or None if data does not
 * fit inline or in the heap (the caller then uses a segment).  Copies data
 * (a plain pickle) inline or into a new heap block, then publishes it: the
 * whole small-value path in one call.
 */
static PyObject *
Arena_store(ArenaObject *self, PyObject *args)
{
    unsigned long index;
    int which;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "kiy*:store", &index, &which, &data)) return NULL;
    PyObject *result = NULL;
    ValueSlot incoming;
    memset(&incoming, 0, sizeof incoming);
    if (check_record(self, index) < 0 || check_which(which) < 0) goto done;
    incoming.length = (uint32_t)data.len;
    if (data.len <= VALUE_INLINE_MAX) {
        incoming.tag = VALUE_INLINE;
        memcpy(incoming.where.bytes, data.buf, data.len);
    } else if (data.len <= HEAP_MAX) {
        if (lock_mutex(self, &self->header->lock, NULL) < 0) goto done;
        uint64_t offset = heap_take(self, (uint32_t)data.len);
        unlock_mutex(&self->header->lock);
        if (offset == 0) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        memcpy(self->base + offset, data.buf, data.len);
        incoming.tag = VALUE_HEAP;
        incoming.where.location = offset;
    } else {
        result = Py_NewRef(Py_None);
        goto done;
    }
    result = publish_slot(self, (uint32_t)index, which, &incoming);
done:
    PyBuffer_Release(&data);
    return result;
}

/* holds(index, which) -> bool: slot `which` has a value.  No lock: a
 * slot only goes from empty to full while its record lives. */
static PyObject *
Arena_holds(ArenaObject *self, PyObject *args)
{
    unsigned long index;
    int which;
    if (!PyArg_ParseTuple(args, "ki:holds", &index, &which)) return NULL;
    if (check_record(self, index) < 0 || check_which(which) < 0) return NULL;
    ValueSlot *slot = (ValueSlot *)record_at(self, (uint32_t)index)->payload + which;
    return PyBool_FromLong(__atomic_load_n(&slot->tag, __ATOMIC_ACQUIRE) != VALUE_NONE);
}

/*
 * read(index, which) -> None | (tag, data): the stored form of slot
 * `which`: bytes for inline and heap values (copied under the lock), the
 * segment id (int) for a segment value, None if the slot is empty.
 */
static PyObject *
Arena_read(ArenaObject *self, PyObject *args)
{
    unsigned long index;
    int which;
    if (!PyArg_ParseTuple(args, "ki:read", &index, &which)) return NULL;
    if (check_record(self, index) < 0 || check_which(which) < 0) return NULL;
    Record *r = record_at(self, (uint32_t)index);
    if (lock_mutex(self, &r->lock, r) < 0) return NULL;
    ValueSlot slot = ((ValueSlot *)r->payload)[which];
    PyObject *data;
    switch (slot.tag) {
    case VALUE_INLINE:
        data = PyBytes_FromStringAndSize((const char *)slot.where.bytes,
                                         slot.length <= VALUE_INLINE_MAX ? slot.length : 0);
        break;
    case VALUE_HEAP:
        data = PyBytes_FromStringAndSize(self->base + slot.where.location, slot.length);
        break;
    case VALUE_SEGMENT:
        data = PyLong_FromUnsignedLongLong(slot.where.location);
        break;
    default:
        unlock_mutex(&r->lock);
        Py_RETURN_NONE;
    }
    unlock_mutex(&r->lock);
    if (data == NULL) return NULL;
    return Py_BuildValue("(IN)", (unsigned int)slot.tag, data);
}

static PyObject *
Arena_clear(ArenaObject *self, PyObject *arg)
{
    Record *r = parse_record(self, arg);
    if (r == NULL) return NULL;
    /* No lock: one atomic AND.  set() writes the state (under the lock)
     * only when it read the flag down, when this AND changes nothing; and
     * a waiter that read the flag up before it returns True, as it may. */
    __atomic_fetch_and(&r->state, ~STATE_FLAG, __ATOMIC_ACQ_REL);
    Py_RETURN_NONE;
}

/* --- slots and links ---------------------------------------------- */

static PyObject *
Arena_slot_alloc(ArenaObject *self, PyObject *args)
{
    unsigned int pid;
    if (!PyArg_ParseTuple(args, "I:slot_alloc", &pid)) return NULL;
    Header *h = self->header;
    if (lock_mutex(self, &h->lock, NULL) < 0) return NULL;
    uint32_t slot;
    if (h->slot_free != 0) {
        slot = h->slot_free - 1;
        h->slot_free = self->slots[slot].next_free;
    } else if (h->slot_bump < h->slot_capacity) {
        slot = h->slot_bump++;
    } else {
        unlock_mutex(&h->lock);
        PyErr_Format(PyExc_RuntimeError,
                     "all %u waiter slots of the arena are in use (one per waiting thread)",
                     h->slot_capacity);
        return NULL;
    }
    Slot *s = &self->slots[slot];
    s->word = 0;
    s->pid = pid;
    s->next_free = 0;
    s->in_use = 1;
    self->links[slot].flags = 0;
    h->slots_live++;
    unlock_mutex(&h->lock);
    return PyLong_FromUnsignedLong(slot);
}

static PyObject *
Arena_slot_free(ArenaObject *self, PyObject *arg)
{
    unsigned long slot;
    if (parse_slot(self, arg, &slot) < 0) return NULL;
    Header *h = self->header;
    if (lock_mutex(self, &h->lock, NULL) < 0) return NULL;
    Slot *s = &self->slots[slot];
    s->in_use = 0;
    s->pid = 0;
    s->next_free = h->slot_free;
    h->slot_free = (uint32_t)slot + 1;
    h->slots_live--;
    unlock_mutex(&h->lock);
    Py_RETURN_NONE;
}

/*
 * slot_owners() -> [(slot, pid)]: the slots in use and who holds them, so
 * Python can tell which belong to dead processes.
 */
static PyObject *
Arena_slot_owners(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *owners = PyList_New(0);
    if (owners == NULL) return NULL;
    uint32_t bump = self->header->slot_bump;
    for (uint32_t i = 0; i < bump; i++) {
        Slot *s = &self->slots[i];
        if (!__atomic_load_n(&s->in_use, __ATOMIC_ACQUIRE)) continue;
        if (append_new(owners, Py_BuildValue("II", i, s->pid)) < 0) {
            Py_DECREF(owners);
            return NULL;
        }
    }
    return owners;
}

/*
 * slot_reclaim(slot): free the slot of a process that died, and every link
 * it left: queued links are taken out of their records' lists (under each
 * record's lock, so no setter can still write to the slot afterwards), its
 * extra links go back to the free list.  The caller must know the owner is
 * dead.
 */
static PyObject *
Arena_slot_reclaim(ArenaObject *self, PyObject *arg)
{
    unsigned long slot;
    if (parse_slot(self, arg, &slot) < 0) return NULL;
    Header *h = self->header;
    uint32_t bump = h->link_bump;
    for (uint32_t i = 0; i < bump; i++) {
        Link *l = &self->links[i];
        int mine = i < h->slot_capacity ? i == slot
                                        : (l->flags & LINK_OWNED) && l->slot == slot;
        if (!mine) continue;
        if (__atomic_load_n(&l->flags, __ATOMIC_ACQUIRE) & LINK_QUEUED) {
            uint32_t index = l->record;
            if (index < h->record_bump) {
                Record *r = record_at(self, index);
                if (lock_mutex(self, &r->lock, r) < 0) return NULL;
                remove_link(self, r, i);
                unlock_mutex(&r->lock);
            }
        }
        if (i >= h->slot_capacity) {
            if (lock_mutex(self, &h->lock, NULL) < 0) return NULL;
            l->flags = 0;
            l->next_free = h->link_free;
            h->link_free = i + 1;
            h->links_live--;
            unlock_mutex(&h->lock);
        }
    }
    if (lock_mutex(self, &h->lock, NULL) < 0) return NULL;
    Slot *s = &self->slots[slot];
    if (s->in_use) {
        s->in_use = 0;
        s->pid = 0;
        s->next_free = h->slot_free;
        h->slot_free = (uint32_t)slot + 1;
        h->slots_live--;
    }
    unlock_mutex(&h->lock);
    Py_RETURN_NONE;
}

static PyObject *
Arena_link_alloc(ArenaObject *self, PyObject *arg)
{
    unsigned long slot;
    if (parse_slot(self, arg, &slot) < 0) return NULL;
    Header *h = self->header;
    if (lock_mutex(self, &h->lock, NULL) < 0) return NULL;
    uint32_t link;
    if (h->link_free != 0) {
        link = h->link_free - 1;
        h->link_free = self->links[link].next_free;
    } else if (h->link_bump < h->link_capacity) {
        link = h->link_bump++;
    } else {
        unlock_mutex(&h->lock);
        PyErr_Format(PyExc_RuntimeError, "all %u waiter links of the arena are in use",
                     h->link_capacity);
        return NULL;
    }
    memset(&self->links[link], 0, sizeof(Link));
    self->links[link].slot = (uint32_t)slot;
    self->links[link].flags = LINK_OWNED;
    h->links_live++;
    unlock_mutex(&h->lock);
    return PyLong_FromUnsignedLong(link);
}

static PyObject *
Arena_link_free(ArenaObject *self, PyObject *arg)
{
    unsigned long link = PyLong_AsUnsignedLong(arg);
    if (link == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    Header *h = self->header;
    if (link < h->slot_capacity || link >= h->link_bump) {
        PyErr_Format(PyExc_ValueError, "link %lu was not allocated with link_alloc", link);
        return NULL;
    }
    if (lock_mutex(self, &h->lock, NULL) < 0) return NULL;
    self->links[link].flags = 0;
    self->links[link].next_free = h->link_free;
    h->link_free = (uint32_t)link + 1;
    h->links_live--;
    unlock_mutex(&h->lock);
    Py_RETURN_NONE;
}

/*
 * enqueue(record, link, slot) -> state.  If the flag is down, queue the
 * link so the next set() fires it and wakes the slot; returns the state
 * word read under the lock either way (flag up: nothing was queued).
 */
static PyObject *
Arena_enqueue(ArenaObject *self, PyObject *args)
{
    unsigned long index, link, slot;
    if (!PyArg_ParseTuple(args, "kkk:enqueue", &index, &link, &slot)) return NULL;
    if (check_record(self, index) < 0 || check_link(self, link) < 0 ||
        check_slot(self, slot) < 0)
        return NULL;
    Record *r = record_at(self, (uint32_t)index);
    if (lock_mutex(self, &r->lock, r) < 0) return NULL;
    uint32_t state = r->state;
    if (!(state & STATE_FLAG)) {
        if (self->links[link].flags & LINK_QUEUED) {
            unlock_mutex(&r->lock);
            PyErr_Format(PyExc_RuntimeError, "link %lu is already queued", link);
            return NULL;
        }
        enqueue_link(self, r, (uint32_t)index, (uint32_t)link, (uint32_t)slot);
    }
    unlock_mutex(&r->lock);
    return PyLong_FromUnsignedLong(state);
}

/* dequeue(record, link) -> fired: take the link out if still queued. */
static PyObject *
Arena_dequeue(ArenaObject *self, PyObject *args)
{
    unsigned long index, link;
    if (!PyArg_ParseTuple(args, "kk:dequeue", &index, &link)) return NULL;
    if (check_record(self, index) < 0 || check_link(self, link) < 0) return NULL;
    Record *r = record_at(self, (uint32_t)index);
    Link *l = &self->links[link];
    if (!(__atomic_load_n(&l->flags, __ATOMIC_ACQUIRE) & LINK_QUEUED) &&
        __atomic_load_n(&l->fired, __ATOMIC_ACQUIRE))
        Py_RETURN_TRUE;
    if (lock_mutex(self, &r->lock, r) < 0) return NULL;
    remove_link(self, r, (uint32_t)link);
    int fired = l->fired;
    unlock_mutex(&r->lock);
    return PyBool_FromLong(fired);
}

static PyObject *
Arena_fired(ArenaObject *self, PyObject *arg)
{
    unsigned long link = PyLong_AsUnsignedLong(arg);
    if (link == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (check_link(self, link) < 0) return NULL;
    return PyBool_FromLong(__atomic_load_n(&self->links[link].fired, __ATOMIC_ACQUIRE));
}

/*
 * Sleep on a slot's word until it is set, the deadline passes, or a signal
 * needs handling.  Returns 1 woken, 0 timed out, -1 error (exception set).
 * `watch`, if not NULL, is a record whose generation is re-read against
 * `generation` at growing intervals (see the top comment).  Without one,
 * the caller does that itself after a bounded park (multi-waits).
 */
static int
park_slot(ArenaObject *self, Slot *s, Record *watch, uint32_t generation, double timeout)
{
    long long deadline = timeout < 0 ? -1 : now_ns() + (long long)(timeout * 1e9);
    long long poll = POLL_NS;
    for (;;) {
        int result = -2;
        Py_BEGIN_ALLOW_THREADS
        for (;;) {
            if (__atomic_load_n(&s->word, __ATOMIC_ACQUIRE)) {
                result = 1;
                break;
            }
            if (watch != NULL &&
                GENERATION(__atomic_load_n(&watch->state, __ATOMIC_ACQUIRE)) != generation) {
                result = 1;
                break;
            }
            long long wait_ns = poll;
            poll = poll * 2 < POLL_MAX_NS ? poll * 2 : POLL_MAX_NS;
            if (deadline >= 0) {
                long long left = deadline - now_ns();
                if (left <= 0) {
                    result = 0;
                    break;
                }
                if (left < wait_ns) wait_ns = left;
            }
            if (futex_wait(&s->word, 0, wait_ns) < 0 && errno == EINTR) break;
        }
        Py_END_ALLOW_THREADS
        if (result != -2) return result;
        if (PyErr_CheckSignals() < 0) return -1;
    }
}

static int
parse_timeout(PyObject *arg, double *timeout)
{
    if (arg == Py_None) {
        *timeout = -1.0;
        return 0;
    }
    *timeout = PyFloat_AsDouble(arg);
    if (*timeout == -1.0 && PyErr_Occurred()) return -1;
    return 0;
}

/* park(slot, timeout) -> bool: sleep until the slot is woken (multi-wait). */
static PyObject *
Arena_park(ArenaObject *self, PyObject *args)
{
    unsigned long slot;
    PyObject *timeout_arg;
    double timeout;
    if (!PyArg_ParseTuple(args, "kO:park", &slot, &timeout_arg)) return NULL;
    if (check_slot(self, slot) < 0 || parse_timeout(timeout_arg, &timeout) < 0) return NULL;
    int woken = park_slot(self, &self->slots[slot], NULL, 0, timeout);
    if (woken < 0) return NULL;
    return PyBool_FromLong(woken);
}

/* reset(slot): arm the slot's word before queueing it anywhere. */
static PyObject *
Arena_reset(ArenaObject *self, PyObject *arg)
{
    unsigned long slot;
    if (parse_slot(self, arg, &slot) < 0) return NULL;
    __atomic_store_n(&self->slots[slot].word, 0, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

/* wake(slot): wake a slot from outside any record (e.g. to stop the hub). */
static PyObject *
Arena_wake(ArenaObject *self, PyObject *arg)
{
    unsigned long slot;
    if (parse_slot(self, arg, &slot) < 0) return NULL;
    __atomic_store_n(&self->slots[slot].word, 1, __ATOMIC_RELEASE);
    futex_wake_all(&self->slots[slot].word);
    Py_RETURN_NONE;
}

/*
 * wait(record, slot, timeout) -> bool: the whole single-record wait in one
 * call.  True when the flag is up on entry or a set() happened while
 * waiting; False on timeout.  timeout: None forever, <= 0 no wait.
 */
static PyObject *
Arena_wait(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "wait(record, slot, timeout)");
        return NULL;
    }
    Record *r = parse_record(self, args[0]);
    if (r == NULL) return NULL;
    if (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) & STATE_FLAG) Py_RETURN_TRUE;
    double timeout;
    if (parse_timeout(args[2], &timeout) < 0) return NULL;
    if (timeout == 0.0 || (timeout < 0 && args[2] != Py_None)) Py_RETURN_FALSE;
    unsigned long slot = PyLong_AsUnsignedLong(args[1]);
    if (slot == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (check_slot(self, slot) < 0) return NULL;
    Slot *s = &self->slots[slot];
    uint32_t index = (uint32_t)(((char *)r - self->records) / RECORD_SIZE);

    if (lock_mutex(self, &r->lock, r) < 0) return NULL;
    uint32_t state = r->state;
    if (state & STATE_FLAG) {
        unlock_mutex(&r->lock);
        Py_RETURN_TRUE;
    }
    __atomic_store_n(&s->word, 0, __ATOMIC_RELAXED);
    enqueue_link(self, r, index, (uint32_t)slot, (uint32_t)slot);
    unlock_mutex(&r->lock);

    int woken = park_slot(self, s, r, GENERATION(state), timeout);
    if (woken == 1 && __atomic_load_n(&s->word, __ATOMIC_ACQUIRE)) {
        Py_RETURN_TRUE; /* a setter dequeued us: nothing left to undo */
    }
    /* Timed out, interrupted, or saw the generation move without being
     * dequeued (its setter died): take our link out ourselves. */
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    if (lock_mutex(self, &r->lock, r) < 0) {
        Py_XDECREF(exc_type);
        Py_XDECREF(exc_value);
        Py_XDECREF(exc_tb);
        return NULL;
    }
    remove_link(self, r, (uint32_t)slot);
    int fired = GENERATION(r->state) != GENERATION(state);
    unlock_mutex(&r->lock);
    if (exc_type != NULL) {
        PyErr_Restore(exc_type, exc_value, exc_tb);
        return NULL;
    }
    return PyBool_FromLong(fired);
}

static PyMethodDef Arena_methods[] = {
    {"format", (PyCFunction)Arena_format, METH_VARARGS,
     "format(records, slots, links) -> size: lay out a new, zeroed segment."},
    {"validate", (PyCFunction)Arena_validate, METH_NOARGS,
     "validate(): check an existing segment's header before using it."},
    {"lock", (PyCFunction)Arena_lock, METH_NOARGS, "Take the arena lock (allocation, attach table)."},
    {"unlock", (PyCFunction)Arena_unlock, METH_NOARGS, "Release the arena lock."},
    {"statistics", (PyCFunction)Arena_statistics, METH_NOARGS, "Counters of the arena."},
    {"held_mark", (PyCFunction)Arena_held_mark, METH_VARARGS,
     "held_mark(entry, index, held): set or clear a held bit."},
    {"held_indices", (PyCFunction)Arena_held_indices, METH_O,
     "held_indices(entry) -> [index] of the records the entry holds."},
    {"held_wipe", (PyCFunction)Arena_held_wipe, METH_O, "held_wipe(entry): clear a bitmap."},
    {"record_alloc", (PyCFunction)Arena_record_alloc, METH_VARARGS,
     "record_alloc(kind) -> (index, serial) or None when full."},
    {"record_retain", (PyCFunction)Arena_record_retain, METH_VARARGS,
     "record_retain(index, serial, adopt) -> kind: take a reference."},
    {"record_pin", (PyCFunction)Arena_record_pin, METH_VARARGS,
     "record_pin(index): take a reference on behalf of a pickle in flight."},
    {"record_release", (PyCFunction)Arena_record_release, METH_VARARGS,
     "record_release(index) -> payload if freed, else None."},
    {"record_info", (PyCFunction)Arena_record_info, METH_VARARGS, "record_info(index) -> dict."},
    {"record_lock", (PyCFunction)Arena_record_lock, METH_O,
     "record_lock(index): take a record's lock and keep it (fault tests only)."},
    {"record_half_set", (PyCFunction)Arena_record_half_set, METH_O,
     "record_half_set(index): lock, publish the flag, wake nobody (fault tests only)."},
    {"is_set", (PyCFunction)Arena_is_set, METH_O, "is_set(index) -> bool, lock-free."},
    {"state", (PyCFunction)Arena_state, METH_O, "state(index) -> generation << 1 | flag."},
    {"set", (PyCFunction)Arena_set, METH_O, "set(index) -> True if this call raised the flag."},
    {"publish_segment", (PyCFunction)Arena_publish_segment, METH_VARARGS,
     "publish_segment(index, which, id, length) -> old descriptor; raises the flag."},
    {"store", (PyCFunction)Arena_store, METH_VARARGS,
     "store(index, which, data) -> old descriptor, or None if too big; raises the flag."},
    {"read", (PyCFunction)Arena_read, METH_VARARGS,
     "read(index, which) -> None or (tag, bytes or segment id)."},
    {"spare_put", (PyCFunction)Arena_spare_put, METH_VARARGS,
     "spare_put(id, size) -> True if the segment is kept for reuse."},
    {"spare_take", (PyCFunction)Arena_spare_take, METH_VARARGS,
     "spare_take(min_size, max_size) -> (id, size) or None."},
    {"holds", (PyCFunction)Arena_holds, METH_VARARGS, "holds(index, which) -> bool."},
    {"clear", (PyCFunction)Arena_clear, METH_O, "clear(index): lower the flag."},
    {"slot_alloc", (PyCFunction)Arena_slot_alloc, METH_VARARGS, "slot_alloc(pid) -> slot."},
    {"slot_free", (PyCFunction)Arena_slot_free, METH_O, "slot_free(slot)."},
    {"link_alloc", (PyCFunction)Arena_link_alloc, METH_O, "link_alloc(slot) -> link."},
    {"slot_owners", (PyCFunction)Arena_slot_owners, METH_NOARGS,
     "slot_owners() -> [(slot, pid)] of the slots in use."},
    {"slot_reclaim", (PyCFunction)Arena_slot_reclaim, METH_O,
     "slot_reclaim(slot): free a dead process's slot and its links."},
    {"link_free", (PyCFunction)Arena_link_free, METH_O, "link_free(link)."},
    {"enqueue", (PyCFunction)Arena_enqueue, METH_VARARGS,
     "enqueue(record, link, slot) -> state word read under the lock."},
    {"dequeue", (PyCFunction)Arena_dequeue, METH_VARARGS,
     "dequeue(record, link) -> True if the link had fired."},
    {"fired", (PyCFunction)Arena_fired, METH_O, "fired(link) -> bool."},
    {"park", (PyCFunction)Arena_park, METH_VARARGS, "park(slot, timeout) -> woken."},
    {"reset", (PyCFunction)Arena_reset, METH_O, "reset(slot): arm the slot's word."},
    {"wake", (PyCFunction)Arena_wake, METH_O, "wake(slot): wake the slot directly."},
    {"wait", (PyCFunction)(void (*)(void))Arena_wait, METH_FASTCALL,
     "wait(record, slot, timeout) -> bool."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ArenaType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mpevent._native.Arena",
    .tp_basicsize = sizeof(ArenaObject),
    .tp_dealloc = (destructor)Arena_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Arena(fd, size): map a segment holding records, slots and links.",
    .tp_methods = Arena_methods,
    .tp_as_buffer = &Arena_as_buffer,
    .tp_init = (initproc)Arena_init,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef native_functions[] = {
    {"segment_size", native_segment_size, METH_VARARGS,
     "segment_size(records, slots, links, heap) -> bytes an arena of those capacities needs."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "mpevent._native",
    "Shared-memory records, waiter slots and futex parking for mpevent.", -1, native_functions,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (PyType_Ready(&ArenaType) < 0) return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL) return NULL;
    Py_INCREF(&ArenaType);
    if (PyModule_AddObject(m, "Arena", (PyObject *)&ArenaType) < 0 ||
        PyModule_AddIntConstant(m, "ATTACH_OFFSET", ATTACH_OFFSET) < 0 ||
        PyModule_AddIntConstant(m, "ATTACH_ENTRIES", ATTACH_ENTRIES) < 0 ||
        PyModule_AddIntConstant(m, "ATTACH_ENTRY_SIZE", ATTACH_ENTRY_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "VALUE_SEGMENT", VALUE_SEGMENT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
