/*
 * The Arena type: mapping a segment, laying it out, reserving its pages,
 * and the module that exports it.  The layout table is in arena.h.
 */
#include "arena.h"

#include <errno.h>
#include <string.h>

uint64_t page_size = 4096; /* os_page_size(), set when the module is made */

/* Populating this much or more releases the GIL meanwhile. */
#define RESERVE_NOGIL (1u << 20)

/*
 * Arena(fd, size): map the segment behind fd.  The caller may close fd at
 * once: unlike mmap.mmap, we keep no duplicate descriptor, so a process
 * holds one mapping per arena and no descriptor.
 */
int
Arena_init(ArenaObject *self, PyObject *args, PyObject *kwds)
{
    int fd;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "in:Arena", &fd, &size)) return -1;
    if (self->base != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Arena is already initialised");
        return -1;
    }
    if ((size_t)size < OWNERS_END) {
        PyErr_Format(PyExc_ValueError, "a segment of %zd bytes is too small to hold an arena",
                     size);
        return -1;
    }
    void *base;
    Py_BEGIN_ALLOW_THREADS
    /* Mostly holes: pages are reserved as regions grow (reserve_range). */
    base = os_map_shared(fd, (size_t)size);
    Py_END_ALLOW_THREADS
    if (base == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->state = PyType_GetModuleState(Py_TYPE(self));
    self->base = base;
    self->size = size;
    self->header = (Header *)self->base;
    self->held_entry = -1;
    self->held_reserved = 0;
    self->pins_forgotten = 0;
    self->live_fd = -1;
    self->held_epoch = 0;
    self->lock_label = 0;
    self->owner_fd = -1;
    self->process_lock = 0;
    static uint64_t instances;
    self->instance = add_fetch_relaxed(&instances, 1);
    return 0;
}

int
Arena_getbuffer(ArenaObject *self, Py_buffer *view, int flags)
{
    if (self->base == NULL) {
        PyErr_SetString(PyExc_ValueError, "Arena is not mapped");
        return -1;
    }
    return PyBuffer_FillInfo(view, (PyObject *)self, self->base, self->size, 0, flags);
}


static void
Arena_bind(ArenaObject *self)
{
    Header *h = self->header;
    self->slots = (Slot *)(self->base + h->slots_offset);
    self->links = (Link *)(self->base + h->links_offset);
    self->records = self->base + h->records_offset;
}

void
Arena_dealloc(ArenaObject *self)
{
    /* Buffers and block views hold a reference to us: none is left. */
    PyTypeObject *type = Py_TYPE(self);
    if (self->base != NULL) os_unmap(self->base, (size_t)self->size);
    type->tp_free((PyObject *)self);
    Py_DECREF(type); /* a heap type's instance holds its type */
}

/* Is obj an Arena of any interpreter's module?  Each interpreter has its
 * own Arena type; they share this dealloc (Arena takes no subclasses). */
static int
is_arena(PyObject *obj)
{
    return Py_TYPE(obj)->tp_dealloc == (destructor)Arena_dealloc;
}

/* `obj` as an Arena, or NULL with TypeError naming `who`, the callee. */
ArenaObject *
arena_argument(PyObject *obj, const char *who)
{
    if (is_arena(obj)) return (ArenaObject *)obj;
    PyErr_Format(PyExc_TypeError, "%s needs an Arena, not %.200s", who, Py_TYPE(obj)->tp_name);
    return NULL;
}

/* --- reserving pages ------------------------------------------------ */

/* 0 once MADV_POPULATE_WRITE was found missing: shared by every thread
 * and interpreter of the process, hence atomic (a lost race costs one
 * more ENOSYS). */
static int populate_supported = 1;

/*
 * Back [offset, offset + length) (page aligned, not yet backed) with
 * memory, counting it against the cap.  Returns 0 or RESERVE_FULL /
 * RESERVE_CAP, having given back any page it got.  Never raises: callers
 * may hold a lock (raise_reserve_error() after unlocking).
 */
int
reserve_range(ArenaObject *a, uint64_t offset, uint64_t length)
{
    Header *h = a->header;
    if (length == 0) return 0;
    uint64_t after = add_fetch_relaxed(&h->shm_reserved, length);
    if (h->shm_cap != 0 && after > h->shm_cap) {
        sub_fetch_relaxed(&h->shm_reserved, length);
        return RESERVE_CAP;
    }
    if (!load_relaxed(&populate_supported)) return 0;
    int error;
    if (length >= RESERVE_NOGIL) {
        Py_BEGIN_ALLOW_THREADS
        error = os_populate(a->base + offset, length);
        Py_END_ALLOW_THREADS
    } else {
        error = os_populate(a->base + offset, length);
    }
    if (error == 0) return 0;
    if (error == ENOSYS) {
        /* Linux < 5.14: no way to reserve without touching; pages fault in
         * on first use as before (a full /dev/shm is then a SIGBUS). */
        store_relaxed(&populate_supported, 0);
        return 0;
    }
    unreserve_range(a, offset, length);
    return RESERVE_FULL;
}

/* Give back reserved pages: the file gets holes, the cap gets the bytes. */
void
unreserve_range(ArenaObject *a, uint64_t offset, uint64_t length)
{
    if (length == 0) return;
    os_punch(a->base + offset, length);
    sub_fetch_relaxed(&a->header->shm_reserved, length);
}

/*
 * Grow the reserved prefix *reserved of a region (at `region`, `capacity`
 * bytes) to cover `needed` bytes, a chunk at a time.  Arena lock held.
 */
int
grow_region(ArenaObject *a, uint64_t region, uint64_t *reserved, uint64_t needed,
            uint64_t capacity)
{
    if (needed <= *reserved) return 0;
    uint64_t target = (needed + RESERVE_CHUNK - 1) / RESERVE_CHUNK * RESERVE_CHUNK;
    uint64_t limit = page_align(capacity);
    if (target > limit) target = limit;
    int error = reserve_range(a, region + *reserved, target - *reserved);
    if (error == 0) *reserved = target;
    return error;
}

static void
raise_memory_error(int error, uint64_t length, unsigned long long used, uint64_t cap,
                   const char *what)
{
    if (error == RESERVE_CAP) {
        PyErr_Format(PyExc_MemoryError,
                     "mpevent's shared-memory cap is reached: %s needs %llu more bytes and the "
                     "arena already uses %llu of MPEVENT_MAX_SHM=%llu bytes; raise "
                     "MPEVENT_MAX_SHM (bytes, or with a K/M/G suffix) in the environment of the "
                     "process that creates the arena, or drop results you no longer need",
                     what, (unsigned long long)length, used, (unsigned long long)cap);
    } else {
        PyErr_Format(PyExc_MemoryError,
                     "/dev/shm is full: %s needs %llu more bytes of shared memory (mpevent uses "
                     "%llu); give /dev/shm more room (in a container: docker run "
                     "--shm-size=1g, or a larger tmpfs), free what other programs keep there, "
                     "or bound mpevent with MPEVENT_MAX_SHM",
                     what, (unsigned long long)length, used);
    }
}

void
raise_reserve_error(ArenaObject *a, int error, uint64_t length, const char *what)
{
    Header *h = a->header;
    raise_memory_error(error, length, load_relaxed(&h->shm_reserved),
                       h->shm_cap, what);
}

/* --- layout --------------------------------------------------------- */

typedef struct {
    uint64_t slots_offset, links_offset, records_offset, small_offset, held_offset;
    uint64_t held_stride, large_offset, total;
} Layout;

/* The one place the offsets of a segment are computed. */
static Layout
compute_layout(uint64_t records, uint64_t slots, uint64_t links, uint64_t small, uint64_t large)
{
    Layout l;
    l.slots_offset = page_align(OWNERS_END);
    l.links_offset = page_align(l.slots_offset + slots * sizeof(Slot));
    l.records_offset = page_align(l.links_offset + links * sizeof(Link));
    l.small_offset = page_align(l.records_offset + records * RECORD_SIZE);
    l.held_offset = page_align(l.small_offset + small);
    l.held_stride = page_align((records + 63) / 64 * 8);
    l.large_offset = l.held_offset + (uint64_t)ATTACH_ENTRIES * l.held_stride;
    l.total = l.large_offset + page_align(large);
    return l;
}

typedef struct {
    unsigned int records, slots, links;
    unsigned long long small, large, cap, watermark;
} Capacities;

static int
parse_capacities(PyObject *args, const char *format, Capacities *c)
{
    c->cap = c->watermark = 0;
    if (!PyArg_ParseTuple(args, format, &c->records, &c->slots, &c->links, &c->small, &c->large,
                          &c->cap, &c->watermark))
        return -1;
    if (c->slots == 0 || c->records == 0 || c->links < c->slots) {
        PyErr_SetString(PyExc_ValueError, "arena capacities must be positive and links >= slots");
        return -1;
    }
    return 0;
}

/* segment_size(records, slots, links, small, large) -> bytes an arena needs. */
PyObject *
native_segment_size(PyObject *module, PyObject *args)
{
    Capacities c;
    if (parse_capacities(args, "IIIKK|KK:segment_size", &c) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(
        compute_layout(c.records, c.slots, c.links, c.small, c.large).total);
}

PyObject *
Arena_format(ArenaObject *self, PyObject *args)
{
    Capacities c;
    if (parse_capacities(args, "IIIKKKK:format", &c) < 0) return NULL;
    Layout layout = compute_layout(c.records, c.slots, c.links, c.small, c.large);
    if (layout.total > (uint64_t)self->size) {
        PyErr_Format(PyExc_ValueError, "arena needs %llu bytes, buffer has %zd",
                     (unsigned long long)layout.total, self->size);
        return NULL;
    }
    /* The header and the attach table are the only pages reserved up front. */
    if (c.cap != 0 && layout.slots_offset > c.cap) {
        PyErr_Format(PyExc_MemoryError,
                     "MPEVENT_MAX_SHM=%llu bytes cannot hold an mpevent arena's header "
                     "(%llu bytes); raise it", c.cap, (unsigned long long)layout.slots_offset);
        return NULL;
    }
    int error = load_relaxed(&populate_supported) ? os_populate(self->base, layout.slots_offset) : 0;
    if (error != 0 && error != ENOSYS) {
        os_punch(self->base, layout.slots_offset);
        raise_memory_error(RESERVE_FULL, layout.slots_offset, 0, 0, "a new arena");
        return NULL;
    }
    Header *h = self->header;
    memset(h, 0, sizeof(Header));
    h->layout_version = LAYOUT_VERSION;
    h->record_size = RECORD_SIZE;
    h->record_capacity = c.records;
    h->slot_capacity = c.slots;
    h->link_capacity = c.links;
    h->link_bump = c.slots; /* links below slot_capacity belong to their slot */
    h->slots_offset = layout.slots_offset;
    h->links_offset = layout.links_offset;
    h->records_offset = layout.records_offset;
    h->small_offset = layout.small_offset;
    h->small_capacity = c.small;
    h->held_offset = layout.held_offset;
    h->held_stride = layout.held_stride;
    h->large_offset = layout.large_offset;
    h->large_capacity = page_align(c.large);
    h->total_size = layout.total;
    h->shm_reserved = layout.slots_offset;
    h->shm_cap = c.cap;
    h->free_watermark = c.watermark;
    h->page_size = (uint32_t)page_size; /* the lock word is 0: free */
    /* The magic goes last: an attacher that sees it sees a whole header. */
    store_release(&h->magic, MAGIC);
    Arena_bind(self);
    return PyLong_FromUnsignedLongLong(layout.total);
}

/*
 * segment_kind(fd) -> (formatted, layout_version): what the header of a
 * segment file says, read with pread before anything is mapped (cleaning
 * looks at arenas it may not map).  formatted is False for a segment whose
 * creator has not written the magic yet (or died before).
 */
PyObject *
native_segment_kind(PyObject *module, PyObject *arg)
{
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    Header start;
    memset(&start, 0, sizeof start);
    size_t wanted = offsetof(Header, layout_version) + sizeof start.layout_version;
    long long got = os_read_at((int)fd, &start, wanted, 0);
    if (got < 0) return PyErr_SetFromErrno(PyExc_OSError);
    int formatted = (size_t)got == wanted && start.magic == MAGIC;
    return Py_BuildValue("(OI)", formatted ? Py_True : Py_False,
                         formatted ? start.layout_version : 0u);
}

PyObject *
Arena_validate(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    Header *h = self->header;
    if (load_acquire(&h->magic) != MAGIC) {
        PyErr_SetString(PyExc_ValueError, "segment is not an mpevent arena (bad magic)");
        return NULL;
    }
    if (h->layout_version != LAYOUT_VERSION || h->record_size != RECORD_SIZE) {
        PyErr_Format(PyExc_ValueError,
                     "arena layout %u is not the layout %u of this mpevent: it was made by "
                     "another mpevent version; use one version in every process that shares it",
                     h->layout_version, LAYOUT_VERSION);
        return NULL;
    }
    if (h->page_size != page_size) {
        PyErr_Format(PyExc_ValueError,
                     "arena made with %u-byte pages cannot be used with this machine's %llu-byte "
                     "pages: processes that share an arena must run under kernels of one page "
                     "size", h->page_size, (unsigned long long)page_size);
        return NULL;
    }
    if (h->total_size > (uint64_t)self->size) {
        PyErr_SetString(PyExc_ValueError, "arena segment is shorter than its header says");
        return NULL;
    }
    Arena_bind(self);
    Py_RETURN_NONE;
}

PyObject *
Arena_statistics(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    Header *h = self->header;
    return Py_BuildValue(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:K,s:K,s:K,s:K,s:K,s:K}", "records_live", h->records_live,
        "record_capacity", h->record_capacity, "slots_live", h->slots_live, "slot_capacity",
        h->slot_capacity, "links_live", h->links_live, "link_capacity", h->link_capacity,
        "recoveries", h->recoveries, "total_size", (unsigned long long)h->total_size,
        "shm_reserved", (unsigned long long)load_relaxed(&h->shm_reserved),
        "shm_cap", (unsigned long long)h->shm_cap, "spilled_values",
        (unsigned long long)load_relaxed(&h->spilled_values), "spilled_bytes",
        (unsigned long long)load_relaxed(&h->spilled_bytes), "spill_errors",
        (unsigned long long)load_relaxed(&h->spill_errors));
}

/* Append *item* (a new reference, or NULL after an error) to *list* and
 * drop the reference.  Returns -1 with an exception set on failure. */
int
append_new(PyObject *list, PyObject *item)
{
    if (item == NULL) return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

/* --- record indices -------------------------------------------------- */

int
check_record(ArenaObject *a, unsigned long index)
{
    if (index >= load_acquire(&a->header->record_bump)) {
        PyErr_Format(PyExc_ValueError, "record index %lu is outside the arena", index);
        return -1;
    }
    return 0;
}

Record *
parse_record(ArenaObject *self, PyObject *arg)
{
    unsigned long index = PyLong_AsUnsignedLong(arg);
    if (index == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (check_record(self, index) < 0) return NULL;
    return record_at(self, (uint32_t)index);
}
