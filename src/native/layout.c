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
    return 0;
}

static int
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

static void
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
int
is_arena(PyObject *obj)
{
    return Py_TYPE(obj)->tp_dealloc == (destructor)Arena_dealloc;
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
static PyObject *
native_segment_size(PyObject *module, PyObject *args)
{
    Capacities c;
    if (parse_capacities(args, "IIIKK|KK:segment_size", &c) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(
        compute_layout(c.records, c.slots, c.links, c.small, c.large).total);
}

static PyObject *
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
static PyObject *
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

static PyObject *
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

static PyObject *
Arena_lock(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    lock_word(self, &self->header->lock, NULL);
    Py_RETURN_NONE;
}

static PyObject *
Arena_unlock(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    unlock_word(self, &self->header->lock);
    Py_RETURN_NONE;
}

static PyObject *
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

/* --- the module ----------------------------------------------------- */

#define METHOD(name, flags, doc) {#name, (PyCFunction)(void (*)(void))Arena_##name, flags, doc}

static PyMethodDef Arena_methods[] = {
    METHOD(format, METH_VARARGS,
           "format(records, slots, links, small, large, cap, watermark) -> size: lay out a "
           "new segment."),
    METHOD(validate, METH_NOARGS, "validate(): check an existing segment's header."),
    METHOD(lock, METH_NOARGS, "Take the arena lock (allocation, attach table)."),
    METHOD(owner_reserve, METH_O,
           "owner_reserve(fd) -> label: take a free lock owner's byte with fd (Full if none)."),
    METHOD(owner_adopt, METH_VARARGS,
           "owner_adopt(label, fd): this process's locks carry label, held through fd."),
    METHOD(lock_label, METH_NOARGS, "lock_label() -> this process's label (0: none)."),
    METHOD(forget_descriptors, METH_NOARGS,
           "forget_descriptors(): locks anonymous, liveness unasked; the descriptors close next."),
    METHOD(lock_word, METH_O,
           "lock_word(index) -> a record's lock word, lock-free (-1: the arena lock's)."),
    METHOD(unlock, METH_NOARGS, "Release the arena lock."),
    METHOD(statistics, METH_NOARGS, "Counters of the arena."),
    METHOD(heap_statistics, METH_NOARGS, "Counters of the value heap."),
    METHOD(held_mark, METH_VARARGS, "held_mark(entry, index, held): set or clear a held bit."),
    METHOD(held_wipe, METH_O, "held_wipe(entry): clear an entry's bitmap."),
    METHOD(held_release_all, METH_O,
           "held_release_all(entry) -> count: give back every reference the entry holds."),
    METHOD(held_share, METH_VARARGS,
           "held_share(src, dst) -> count: the child's references (and bits, dst >= 0)."),
    METHOD(adopt_entry, METH_VARARGS,
           "adopt_entry(entry, epoch, fd): this process joined as attach entry, locked by fd."),
    METHOD(entry, METH_O, "entry(e) -> (state, epoch, pid) of an attach entry."),
    METHOD(entry_write, METH_VARARGS,
           "entry_write(e, state, pid) -> epoch; a new epoch on ENTRY_ATTACHED. Arena lock held."),
    METHOD(entry_alive, METH_VARARGS, "entry_alive(e, epoch) -> bool, asked of the kernel."),
    METHOD(entries, METH_NOARGS, "entries() -> [(e, state, epoch, pid)] of the used entries."),
    METHOD(free_entry, METH_NOARGS, "free_entry() -> the first free entry; Full if none."),
    METHOD(probe_dead, METH_VARARGS,
           "probe_dead(fd, limit) -> [(e, state)] of dead entries among the next `limit`."),
    METHOD(mark_unlinked, METH_NOARGS, "mark_unlinked(): the segment's name is going away."),
    METHOD(advise_huge, METH_NOARGS, "advise_huge() -> bool: MADV_HUGEPAGE on the value heap."),
    METHOD(is_unlinked, METH_NOARGS, "is_unlinked() -> bool."),
    METHOD(claim, METH_O, "claim(index): promise that this process sets the record."),
    METHOD(claim_abandon, METH_O, "claim_abandon(index): this process exits without setting it."),
    METHOD(record_alloc, METH_VARARGS, "record_alloc(kind) -> (index, serial); Full if none."),
    METHOD(record_retain, METH_VARARGS,
           "record_retain(index, serial, adopt) -> kind: take a reference."),
    METHOD(record_pin, METH_VARARGS, "record_pin(index): a reference for a pickle in flight."),
    METHOD(record_release, METH_VARARGS, "record_release(index) -> True if freed."),
    METHOD(record_info, METH_VARARGS, "record_info(index) -> dict."),
    METHOD(record_lock, METH_O, "record_lock(index): lock and keep it (fault tests only)."),
    METHOD(record_half_set, METH_O,
           "record_half_set(index): lock, publish the flag, wake nobody (fault tests only)."),
    METHOD(is_set, METH_O, "is_set(index) -> bool, lock-free."),
    METHOD(state, METH_O, "state(index) -> generation << 1 | flag."),
    METHOD(set, METH_O, "set(index) -> True if this call raised the flag."),
    METHOD(clear, METH_O, "clear(index): lower the flag."),
    METHOD(store, METH_VARARGS,
           "store(index, which, parts, entry): store a pickle (one part) or a frame, raise the flag."),
    METHOD(block_alloc, METH_VARARGS,
           "block_alloc(length, entry) -> offset: a large block to write a value into."),
    METHOD(publish_spill, METH_VARARGS,
           "publish_spill(index, which, token, inode, length): store a spilled value, raise the flag."),
    METHOD(spill_tokens, METH_NOARGS, "spill_tokens() -> the tokens of every published spill file."),
    METHOD(spill_settings, METH_NOARGS, "spill_settings() -> (dir, name); dir '' when off."),
    METHOD(set_spill, METH_VARARGS, "set_spill(dir, name): where the arena spills (creator, once)."),
    METHOD(load, METH_VARARGS,
           "load(index, which, known, entry) -> (generation, slot, tag, data), in one call."),
    METHOD(holds, METH_VARARGS, "holds(index, which) -> bool."),
    METHOD(heap_forget, METH_O,
           "heap_forget(entry): give back the reader pins and unpublished blocks of a process."),
    METHOD(after_fork_child, METH_O,
           "after_fork_child(entry): pin the inherited block views for this new process."),
    METHOD(slot_alloc, METH_NOARGS, "slot_alloc() -> slot, owned by this process's entry."),
    METHOD(slot_free, METH_O, "slot_free(slot)."),
    METHOD(slot_owners, METH_NOARGS,
           "slot_owners() -> [(slot, entry, epoch)] of the slots in use."),
    METHOD(slot_reclaim, METH_VARARGS,
           "slot_reclaim(slot, entry, epoch) -> True if it freed that dead owner's slot."),
    METHOD(link_alloc, METH_O, "link_alloc(slot) -> link."),
    METHOD(link_free, METH_O, "link_free(link)."),
    METHOD(enqueue, METH_VARARGS, "enqueue(record, link, slot) -> state read under the lock."),
    METHOD(dequeue, METH_VARARGS, "dequeue(record, link) -> True if the link had fired."),
    METHOD(fired, METH_O, "fired(link) -> bool."),
    METHOD(fired_among, METH_O, "fired_among(links: dict) -> [fired links among its keys]."),
    METHOD(park, METH_VARARGS, "park(slot, timeout) -> woken."),
    METHOD(reset, METH_O, "reset(slot): arm the slot's word."),
    METHOD(wake, METH_O, "wake(slot): wake the slot directly."),
    METHOD(loop_address, METH_VARARGS,
           "loop_address(slot, token) -> bytes: the abstract unix address of a loop's slot."),
    METHOD(set_loop, METH_VARARGS,
           "set_loop(slot, token): wake the slot by a datagram to that address (0: by futex)."),
    METHOD(wait, METH_FASTCALL, "wait(record, slot, timeout) -> bool, or None: needs a slot."),
    METHOD(wait_any, METH_VARARGS,
           "wait_any(records, slot, links, timeout) -> positions seen set, or None: needs a slot."),
    METHOD(recheck, METH_VARARGS,
           "recheck(index, generation) -> bool: moved since, a lost claim failed now."),
    METHOD(spinners, METH_NOARGS, "spinners() -> int: spin seats held now, by waiters of any process."),
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Arena_slots[] = {
    {Py_tp_dealloc, Arena_dealloc},
    {Py_tp_doc, "Arena(fd, size): map a segment holding records, slots, links and values."},
    {Py_tp_methods, Arena_methods},
    {Py_bf_getbuffer, Arena_getbuffer},
    {Py_tp_init, Arena_init},
    {Py_tp_new, PyType_GenericNew},
    {0, NULL},
};

static PyType_Spec Arena_spec = {
    .name = "mpevent.shm._native.Arena",
    .basicsize = sizeof(ArenaObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Arena_slots,
};

/* lock_faults() -> int: lock calls that failed where no caller could be told. */
static PyObject *
native_lock_faults(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLong(lock_fault_count());
}

/* populate_supported() -> bool: can this kernel reserve shared pages before
 * they are touched (MADV_POPULATE_WRITE, Linux 5.14+)?  For `doctor`. */
static PyObject *
native_populate_supported(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    void *page = os_map_scratch(page_size);
    if (page == NULL) return PyErr_SetFromErrno(PyExc_OSError);
    int error = os_populate(page, page_size);
    os_unmap(page, page_size);
    return PyBool_FromLong(error == 0);
}

/* spin_limit() -> int: pause instructions a waiter may spin before parking. */
static PyObject *
native_spin_limit(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(load_relaxed(&spin_limit));
}

/* main_interpreter() -> bool: is this the process's main interpreter? */
static PyObject *
native_main_interpreter(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(PyInterpreterState_Get() == PyInterpreterState_Main());
}

static PyMethodDef native_functions[] = {
    {"main_interpreter", native_main_interpreter, METH_NOARGS,
     "main_interpreter() -> bool: True unless called in a subinterpreter."},
    {"spin_limit", native_spin_limit, METH_NOARGS,
     "spin_limit() -> int: how long a waiter spins before parking (0: never)."},
    {"set_spin_limit", native_set_spin_limit, METH_O,
     "set_spin_limit(limit or None) -> int: set the spin limit (None: the default); "
     "returns the one in force (0 with one usable CPU)."},
    {"wakeup_sender", native_wakeup_sender, METH_NOARGS,
     "wakeup_sender() -> int: this process's socket for event loops' wakeups (kept for life)."},
    {"spin_stats", native_spin_stats, METH_NOARGS,
     "spin_stats() -> dict: this process's spin decisions (spun, won, same_cpu, "
     "no_seat, low_budget) and the limit and seats in force."},
    {"fs_type", native_fs_type, METH_O, "fs_type(path) -> int: statfs(2) f_type of path's filesystem."},
    {"segment_kind", native_segment_kind, METH_O,
     "segment_kind(fd) -> (formatted, layout_version) of a segment file's header."},
    {"lock_faults", native_lock_faults, METH_NOARGS,
     "lock_faults() -> int: lock calls that failed where no caller could be told (0)."},
    {"populate_supported", native_populate_supported, METH_NOARGS,
     "populate_supported() -> bool: MADV_POPULATE_WRITE works here (Linux 5.14+)."},
    {"segment_size", native_segment_size, METH_VARARGS,
     "segment_size(records, slots, links, small, large) -> bytes such an arena spans."},
    {"untrack", native_untrack, METH_O,
     "untrack(obj): leave the cyclic garbage collector out of an acyclic object."},
    {"set_hooks", native_set_hooks, METH_O,
     "set_hooks(wait_path): the Python wait Handle.wait hands every blocking case to."},
    {"copy_bytes", native_copy_bytes, METH_O,
     "copy_bytes(buffer) -> bytes: a private copy, its pages faulted in at once."},
    {"ofd_lock", native_ofd_lock, METH_VARARGS,
     "ofd_lock(fd, start, length, wait) -> True if taken, False if another holds it."},
    {"ofd_unlock", native_ofd_unlock, METH_VARARGS, "ofd_unlock(fd, start, length)."},
    {"ofd_held", native_ofd_held, METH_VARARGS,
     "ofd_held(fd, start, length) -> True if another open file description locks a byte."},
    {"before_fork", native_before_fork, METH_NOARGS,
     "before_fork(): hold every block this process views across a fork."},
#ifdef MPEVENT_TEST_POINTS
    {"test_point_arm", native_test_point_arm, METH_O,
     "test_point_arm(name): the next thread to reach the point stops there (testpoints.c)."},
    {"test_point_reached", native_test_point_reached, METH_VARARGS,
     "test_point_reached(name, timeout) -> bool: a thread stopped at the point in time."},
    {"test_point_release", native_test_point_release, METH_O,
     "test_point_release(name): the stopped thread goes on; the point is disarmed."},
#endif
    {NULL, NULL, 0, NULL},
};

/*
 * The module is initialized in two phases (PEP 489), and says how it may
 * be used:
 *   - free-threaded builds: the GIL stays off (Py_MOD_GIL_NOT_USED).  The
 *     C code keeps no state that threads share without a lock word, a
 *     local lock (the watch, the block views) or an atomic: each file
 *     says which (handle.c for a handle's arena pointer, spin.c for the
 *     spin settings).  The Python side's shared state is under its own
 *     locks.
 *   - subinterpreters, each with its own GIL: supported.  Every Python
 *     object the C code keeps -- the types, Full, the wait path, the list
 *     of block views -- is in the module's state, one per interpreter
 *     (NativeState, arena.h); an arena reaches it through its type.  What
 *     is shared holds no Python object and runs once per process
 *     (process_init): the page size, the spin settings, the watch and its
 *     fork hooks.  Each interpreter attaches to an arena as a process
 *     would (its own descriptor, attach entry and OFD locks), so the
 *     liveness rules need nothing new.
 */
/* Once per process, under a local lock: interpreters with their own GIL
 * may import the module at once.  (Not pthread_once: since glibc 2.34 it
 * would make the wheel manylinux_2_34.) */
static uint32_t process_lock;
static int process_ready;

static void
process_init(void)
{
    local_lock(&process_lock);
    if (!process_ready) {
        page_size = os_page_size();
        watch_init();
        process_ready = 1;
    }
    local_unlock(&process_lock);
}

static int
add_type(PyObject *m, PyTypeObject **slot, PyType_Spec *spec, PyObject *base)
{
    *slot = (PyTypeObject *)PyType_FromModuleAndSpec(m, spec, base);
    if (*slot == NULL) return -1;
    const char *name = strrchr(spec->name, '.') + 1;
    return PyModule_AddObjectRef(m, name, (PyObject *)*slot);
}

static int
native_exec(PyObject *m)
{
    NativeState *state = PyModule_GetState(m);
    process_init();
    state->full_error = PyErr_NewExceptionWithDoc(
        "mpevent.shm._native.Full",
        "A table of an arena (records, waiter slots, links, attach entries) has no free row.",
        PyExc_MemoryError, NULL);
    if (state->full_error == NULL) return -1;
    if (PyModule_AddObjectRef(m, "Full", state->full_error) < 0) return -1;
    if (add_type(m, &state->arena_type, &Arena_spec, NULL) < 0 ||
        add_type(m, &state->handle_type, &HandleSpec, NULL) < 0 ||
        add_type(m, &state->event_handle_type, &EventHandleSpec,
                 (PyObject *)state->handle_type) < 0 ||
        add_type(m, &state->view_type, &BlockViewSpec, NULL) < 0 ||
        add_type(m, &state->notifier_type, &NotifierSpec, NULL) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "ATTACH_OFFSET", ATTACH_OFFSET) < 0 ||
        PyModule_AddIntConstant(m, "ATTACH_ENTRIES", ATTACH_ENTRIES) < 0 ||
        PyModule_AddIntConstant(m, "ATTACH_ENTRY_SIZE", ATTACH_ENTRY_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "SMALL_MAX", SMALL_MAX) < 0 ||
        PyModule_AddIntConstant(m, "VALUE_INLINE", VALUE_INLINE) < 0 ||
        PyModule_AddIntConstant(m, "VALUE_SMALL", VALUE_SMALL) < 0 ||
        PyModule_AddIntConstant(m, "VALUE_LARGE", VALUE_LARGE) < 0 ||
        PyModule_AddIntConstant(m, "VALUE_SPILLED", VALUE_SPILLED) < 0 ||
        PyModule_AddIntConstant(m, "VALUE_PICKLE", VALUE_PICKLE) < 0 ||
        PyModule_AddIntConstant(m, "VALUE_FAILED", VALUE_FAILED) < 0 ||
        PyModule_AddIntConstant(m, "LAYOUT_VERSION", LAYOUT_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "ENTRY_FREE", ENTRY_FREE) < 0 ||
        PyModule_AddIntConstant(m, "ENTRY_ATTACHED", ENTRY_ATTACHED) < 0 ||
        PyModule_AddIntConstant(m, "ENTRY_RECLAIMING", ENTRY_RECLAIMING) < 0 ||
        PyModule_AddIntConstant(m, "PAGE", (long)page_size) < 0 ||
        PyModule_AddIntConstant(m, "BLOCK_HEADER", (long)BLOCK_HEADER) < 0 ||
        PyModule_AddIntConstant(m, "HUGE_PAGE", (long)os_huge_page_size()) < 0 ||
        PyModule_AddIntConstant(m, "LOCK_WAITERS", (long)LOCK_WAITERS) < 0 ||
        PyModule_AddIntConstant(m, "LOCK_CHECK_MS", LOCK_CHECK_NS / 1000000) < 0 ||
        PyModule_AddIntConstant(m, "HEADER_LAYOUT_VERSION", offsetof(Header, layout_version)) < 0 ||
        PyModule_AddIntConstant(m, "HEADER_PAGE_SIZE", offsetof(Header, page_size)) < 0 ||
        PyModule_AddIntConstant(m, "RECHECK_MS", RECHECK_NS / 1000000) < 0 ||
        PyModule_AddIntConstant(m, "NOTIFY_TICK", (long)NOTIFY_TICK) < 0 ||
        PyModule_AddIntConstant(m, "SPIN_LIMIT_MAX", SPIN_LIMIT_MAX) < 0)
        return -1;
    return 0;
}

/* Every Python object of the module state, listed once for traverse and clear. */
#define STATE_OBJECTS(DO)                                                                        \
    DO(full_error) DO(arena_type) DO(handle_type) DO(event_handle_type) DO(view_type)            \
        DO(notifier_type) DO(wait_path)

static int
native_traverse(PyObject *m, visitproc visit, void *arg)
{
    NativeState *state = PyModule_GetState(m);
#define VISIT(field) Py_VISIT(state->field);
    STATE_OBJECTS(VISIT)
#undef VISIT
    return 0;
}

static int
native_clear(PyObject *m)
{
    NativeState *state = PyModule_GetState(m);
#define CLEAR(field) Py_CLEAR(state->field);
    STATE_OBJECTS(CLEAR)
#undef CLEAR
    return 0;
}

static void
native_free(void *m)
{
    native_clear((PyObject *)m);
}

static PyModuleDef_Slot native_slots[] = {
    {Py_mod_exec, native_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mpevent.shm._native",
    .m_doc = "Shared-memory records, waiter slots, futex parking and the value heap of mpevent.",
    .m_size = sizeof(NativeState),
    .m_methods = native_functions,
    .m_slots = native_slots,
    .m_traverse = native_traverse,
    .m_clear = native_clear,
    .m_free = native_free,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&native_module);
}
