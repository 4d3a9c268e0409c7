/*
 * Records: allocation, cross-process reference counts, held bitmaps, the
 * state word (set / clear / is_set) and the two value slots.
 *
 * The state word is generation << 1 | flag, published in one store; see
 * arena.h for why.  Value slots point into the heap (heap.c).
 */
#include "arena.h"

#include <errno.h>
#include <string.h>

/* --- held bitmaps ---------------------------------------------------- */

static uint64_t *
held_words(ArenaObject *a, unsigned long entry)
{
    return (uint64_t *)(a->base + a->header->held_offset + entry * a->header->held_stride);
}

/* Bytes of an entry's bitmap that are reserved. */
static uint32_t *
held_reserved_of(ArenaObject *a, unsigned long entry)
{
    return &entry_at(a, (uint32_t)entry)->held_reserved;
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
parse_entry(PyObject *arg, unsigned long *entry)
{
    *entry = PyLong_AsUnsignedLong(arg);
    if (*entry == (unsigned long)-1 && PyErr_Occurred()) return -1;
    return check_entry(*entry);
}

/*
 * adopt_entry(entry, epoch, fd): this process now owns attach entry
 * `entry` (joined at `epoch`), and fd is its own descriptor of the segment,
 * holding the OFD lock on byte `entry` (liveness.c).
 */
PyObject *
Arena_adopt_entry(ArenaObject *self, PyObject *args)
{
    unsigned long entry;
    unsigned int epoch;
    int fd;
    if (!PyArg_ParseTuple(args, "kIi:adopt_entry", &entry, &epoch, &fd)) return NULL;
    if (check_entry(entry) < 0) return NULL;
    local_lock(&self->process_lock);
    store_relaxed(&self->held_entry, (long)entry);
    store_relaxed(&self->held_epoch, epoch);
    self->live_fd = fd;
    store_relaxed(&self->pins_forgotten, 0);
    local_unlock(&self->process_lock);
    Py_RETURN_NONE;
}

/* Reserve the bitmap page holding record `index`'s bit (own entry only). */
static int
reserve_held(ArenaObject *a, unsigned long entry, unsigned long index)
{
    uint32_t *reserved = held_reserved_of(a, entry);
    uint64_t needed = page_align((index / 64 + 1) * 8);
    if (needed <= load_acquire(reserved)) return 0;
    Header *h = a->header;
    lock_word(a, &h->lock);
    uint64_t done = *reserved;
    int error = grow_region(a, h->held_offset + entry * h->held_stride, &done, needed,
                            h->held_stride);
    if (error == 0) store_release(reserved, (uint32_t)done);
    unlock_word(a, &h->lock);
    if (error) {
        raise_reserve_error(a, error, RESERVE_CHUNK, "a new object");
        return -1;
    }
    return 0;
}

/* Set (held) or clear the bit of record `index` in entry's bitmap; -1 with
 * MemoryError if setting it needs a page that cannot be had.  A bit on a
 * page never reserved was never set: clearing it is nothing to do.
 * Atomic: threads of the process mark records sharing a word. */
static int
held_set(ArenaObject *self, unsigned long entry, unsigned long index, int held)
{
    if (held && reserve_held(self, entry, index) < 0) return -1;
    if (!held && (index / 64 + 1) * 8 > load_acquire(held_reserved_of(self, entry))) return 0;
    uint64_t *word = held_words(self, entry) + index / 64;
    uint64_t bit = (uint64_t)1 << (index % 64);
    if (held)
        fetch_or_release(word, bit);
    else
        fetch_and_release(word, ~bit);
    return 0;
}

/* held_mark(entry, index, held): set or clear the bit of record `index`. */
PyObject *
Arena_held_mark(ArenaObject *self, PyObject *args)
{
    unsigned long entry, index;
    int held;
    if (!PyArg_ParseTuple(args, "kkp:held_mark", &entry, &index, &held)) return NULL;
    if (check_entry(entry) < 0 || check_record(self, index) < 0) return NULL;
    if (held_set(self, entry, index, held) < 0) return NULL;
    Py_RETURN_NONE;
}

/* Words of an entry's bitmap to read: those of allocated records, and only
 * reserved pages (reading a hole could need memory too). */
static uint64_t
held_word_count(ArenaObject *a, unsigned long entry)
{
    uint64_t count = (load_acquire(&a->header->record_bump) + 63) / 64;
    uint64_t reserved = load_acquire(held_reserved_of(a, entry)) / 8;
    return count < reserved ? count : reserved;
}

/* held_wipe(entry): clear an entry's bitmap and give its pages back.  The
 * entry must be nobody's: its process is dead, or it is being claimed
 * under the arena lock (join). */
PyObject *
Arena_held_wipe(ArenaObject *self, PyObject *arg)
{
    unsigned long entry;
    if (parse_entry(arg, &entry) < 0) return NULL;
    uint32_t *reserved = held_reserved_of(self, entry);
    Header *h = self->header;
    unreserve_range(self, h->held_offset + entry * h->held_stride,
                    exchange_acq_rel(reserved, 0));
    Py_RETURN_NONE;
}

/* --- records ------------------------------------------------------- */

PyObject *
Arena_record_alloc(ArenaObject *self, PyObject *args)
{
    unsigned int kind;
    if (!PyArg_ParseTuple(args, "I:record_alloc", &kind)) return NULL;
    if (kind > 0xff) {
        PyErr_Format(PyExc_ValueError, "kind %u does not fit a record (at most 255)", kind);
        return NULL;
    }
    if (kind == KIND_FREE) {
        PyErr_SetString(PyExc_ValueError, "kind 0 means free");
        return NULL;
    }
    Header *h = self->header;
    lock_word(self, &h->lock);
    uint32_t index;
    Record *r;
    if (h->record_free != 0) {
        index = h->record_free - 1;
        r = record_at(self, index);
        h->record_free = r->next_free;
    } else if (h->record_bump < h->record_capacity) {
        index = h->record_bump;
        int error = grow_region(self, h->records_offset, &h->records_reserved,
                                (uint64_t)(index + 1) * RECORD_SIZE,
                                (uint64_t)h->record_capacity * RECORD_SIZE);
        if (error) {
            unlock_word(self, &h->lock);
            raise_reserve_error(self, error, RESERVE_CHUNK, "a new object");
            return NULL;
        }
        r = record_at(self, index);
        memset(r, 0, RECORD_SIZE); /* its lock word free, its kind KIND_FREE */
        store_release(&h->record_bump, index + 1); /* check_record reads it lock-free */
    } else {
        unlock_word(self, &h->lock);
        PyErr_Format(self->state->full_error, "all %u records of the arena are in use", h->record_capacity);
        return NULL; /* the caller opens another arena */
    }
    uint32_t serial = ++h->serial;
    h->records_live++;
    unlock_word(self, &h->lock);
    /*
     * Initialised under the record's own lock, the lock record_retain reads
     * these fields under, with the kind last: a stale handle's retain sees
     * KIND_FREE (refused) or the whole new record (its serial differs:
     * refused), never the new kind with the old serial.  Off the free list
     * and not yet kind, the record is nobody's, so nothing else writes it.
     * (src/native/models/records.cpp)
     */
    lock_word(self, &r->lock);
    store_release(&r->state, 0);
    store_release(&r->waiters, 0);
    r->refcount = 1;
    r->inflight = 0;
    store_relaxed(&r->claim_epoch, 0);
    store_release(&r->claim, 0);
    r->claim_pid = 0;
    r->next_free = 0;
    memset(r->payload, 0, PAYLOAD_SIZE);
    r->serial = serial;
    store_relaxed(&r->setter_cpu, 0);
    store_relaxed(&r->spin_misses, 0);
    r->kind = (uint8_t)kind;
    unlock_word(self, &r->lock);
    return Py_BuildValue("II", index, serial);
}

/* Take a reference for a handle.  adopt=1: take over a pickle's reference. */
PyObject *
Arena_record_retain(ArenaObject *self, PyObject *args)
{
    unsigned long index;
    unsigned int serial;
    int adopt;
    if (!PyArg_ParseTuple(args, "kIp:record_retain", &index, &serial, &adopt)) return NULL;
    if (check_record(self, index) < 0) return NULL;
    Record *r = record_at(self, (uint32_t)index);
    lock_record(self, r);
    if (r->kind == KIND_FREE || r->serial != serial) {
        unlock_word(self, &r->lock);
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
    unlock_word(self, &r->lock);
    return PyLong_FromUnsignedLong(kind);
}

/* A pickle of a handle holds a reference until it is unpickled. */
PyObject *
Arena_record_pin(ArenaObject *self, PyObject *args)
{
    unsigned long index;
    if (!PyArg_ParseTuple(args, "k:record_pin", &index)) return NULL;
    if (check_record(self, index) < 0) return NULL;
    Record *r = record_at(self, (uint32_t)index);
    lock_record(self, r);
    r->refcount++;
    r->inflight++;
    unlock_word(self, &r->lock);
    Py_RETURN_NONE;
}

/* Drop one reference; the last frees the record and its values.
 * Returns 1 if freed, 0 if not, -1 with an exception. */
static int
record_release_one(ArenaObject *self, uint32_t index)
{
    Header *h = self->header;
    Record *r = record_at(self, index);
    lock_record(self, r);
    if (r->kind == KIND_FREE || r->refcount == 0) {
        unlock_word(self, &r->lock);
        PyErr_Format(PyExc_RuntimeError, "record %u released more often than retained", index);
        return -1;
    }
    if (--r->refcount > 0) {
        unlock_word(self, &r->lock);
        return 0;
    }
    release_values(self, (ValueSlot *)r->payload, 2);
    r->kind = KIND_FREE;
    unlock_word(self, &r->lock);
    lock_word(self, &h->lock);
    r->next_free = h->record_free;
    h->record_free = index + 1;
    h->records_live--;
    unlock_word(self, &h->lock);
    return 1;
}

PyObject *
Arena_record_release(ArenaObject *self, PyObject *args)
{
    unsigned long index;
    if (!PyArg_ParseTuple(args, "k:record_release", &index)) return NULL;
    if (check_record(self, index) < 0) return NULL;
    int freed = record_release_one(self, (uint32_t)index);
    if (freed < 0) return NULL;
    return PyBool_FromLong(freed);
}

/*
 * record_give_back(entry, index) -> True if freed: this process lets go of
 * its reference, the last Record object of the process being gone -- its
 * held bit cleared, then the reference dropped (unmark first, uncount
 * second: dying in between leaks, never releases twice).  One call, for a
 * finalizer that runs cold (a dropped handle, mpevent.shm._record).
 */
PyObject *
Arena_record_give_back(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "record_give_back() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    unsigned long entry = PyLong_AsUnsignedLong(args[0]);
    if (entry == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    unsigned long index = PyLong_AsUnsignedLong(args[1]);
    if (index == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (check_entry(entry) < 0 || check_record(self, index) < 0) return NULL;
    held_set(self, entry, index, 0); /* clearing never fails */
    int freed = record_release_one(self, (uint32_t)index);
    if (freed < 0) return NULL;
    return PyBool_FromLong(freed);
}

/*
 * held_release_all(entry) -> count: give back every reference an entry's
 * process holds (it is exiting, or dead).  Each word of the bitmap is
 * cleared before its records are released -- unmark first, uncount
 * second -- so dying midway leaks and never releases twice.
 */
PyObject *
Arena_held_release_all(ArenaObject *self, PyObject *arg)
{
    unsigned long entry;
    if (parse_entry(arg, &entry) < 0) return NULL;
    uint64_t *words = held_words(self, entry);
    uint64_t count = held_word_count(self, entry);
    unsigned long released = 0;
    for (uint64_t w = 0; w < count; w++) {
        uint64_t bits = exchange_acq_rel(&words[w], 0);
        while (bits) {
            int b = __builtin_ctzll(bits);
            bits &= bits - 1;
            if (record_release_one(self, (uint32_t)(w * 64 + b)) < 0) return NULL;
            released++;
        }
    }
    return PyLong_FromUnsignedLong(released);
}

/*
 * held_share(src, dst) -> count: before a fork, take one reference for the
 * child (attach entry dst, prepared by the parent) on every record the
 * parent (entry src) holds, and set its bit in the child's bitmap: count
 * first, mark second.  dst < 0: take the references only (the child marks
 * them itself once it has joined).  One call for all the records, which a
 * fork of a process holding many would otherwise pay record by record.
 */
PyObject *
Arena_held_share(ArenaObject *self, PyObject *args)
{
    unsigned long src;
    long dst;
    if (!PyArg_ParseTuple(args, "kl:held_share", &src, &dst)) return NULL;
    if (check_entry(src) < 0 || (dst >= 0 && check_entry((unsigned long)dst) < 0)) return NULL;
    uint64_t *words = held_words(self, src);
    uint64_t count = held_word_count(self, src);
    unsigned long shared = 0;
    for (uint64_t w = 0; w < count; w++) {
        uint64_t bits = load_acquire(&words[w]);
        while (bits) {
            int b = __builtin_ctzll(bits);
            bits &= bits - 1;
            uint32_t index = (uint32_t)(w * 64 + b);
            Record *r = record_at(self, index);
            lock_record(self, r);
            int alive = r->kind != KIND_FREE && r->refcount > 0;
            if (alive) r->refcount++;
            unlock_word(self, &r->lock);
            if (!alive) continue;
            if (dst >= 0) {
                if (reserve_held(self, (unsigned long)dst, index) < 0) {
                    record_release_one(self, index);
                    return NULL;
                }
                fetch_or_release(held_words(self, (unsigned long)dst) + w, (uint64_t)1 << b);
            }
            shared++;
        }
    }
    return PyLong_FromUnsignedLong(shared);
}

PyObject *
Arena_record_info(ArenaObject *self, PyObject *args)
{
    unsigned long index;
    if (!PyArg_ParseTuple(args, "k:record_info", &index)) return NULL;
    if (check_record(self, index) < 0) return NULL;
    Record *r = record_at(self, (uint32_t)index);
    unsigned int waiters = 0;
    lock_record(self, r);
    uint32_t next = r->waiters;
    uint32_t guard = self->header->link_capacity;
    while (next != 0 && guard--) {
        waiters++;
        next = self->links[next - 1].next;
    }
    /* Field by field: clear() and spinners change their words without the
     * lock, so the record is never copied whole. */
    unsigned int kind = r->kind, serial = r->serial, refcount = r->refcount,
                 inflight = r->inflight, state = load_acquire(&r->state);
    unlock_word(self, &r->lock);
    /* Built after unlocking: creating a dict may run the garbage collector,
     * whose finalizers may need this very lock. */
    return Py_BuildValue(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "kind", kind, "serial", serial, "flag",
        state & STATE_FLAG, "generation", GENERATION(state), "refcount", refcount, "inflight",
        inflight, "waiters", waiters);
}

/* lock_word(index) -> the record's lock word, read without taking it
 * (index -1: the arena lock's).  Tests watch sleepers and owners with it. */
PyObject *
Arena_lock_word(ArenaObject *self, PyObject *arg)
{
    long index = PyLong_AsLong(arg);
    if (index == -1 && PyErr_Occurred()) return NULL;
    if (index == -1)
        return PyLong_FromUnsignedLong(load_relaxed(&self->header->lock));
    if (index < 0 || check_record(self, (unsigned long)index) < 0) {
        if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "no record %ld", index);
        return NULL;
    }
    return PyLong_FromUnsignedLong(
        load_relaxed(&record_at(self, (uint32_t)index)->lock));
}

/* --- state -------------------------------------------------------- */

PyObject *
Arena_is_set(ArenaObject *self, PyObject *arg)
{
    Record *r = parse_record(self, arg);
    if (r == NULL) return NULL;
    /* A plain load: no lock, no system call. */
    return PyBool_FromLong(load_acquire(&r->state) & STATE_FLAG);
}

PyObject *
Arena_state(ArenaObject *self, PyObject *arg)
{
    Record *r = parse_record(self, arg);
    if (r == NULL) return NULL;
    return PyLong_FromUnsignedLong(load_acquire(&r->state));
}

/*
 * Raise the flag with a new generation and fire every waiter: the one
 * publish step of set(), of a stored value and of a failed claim.  The
 * record lock is held on entry and released here; the futex wakes come
 * after unlocking.  `state` is the state word read under the lock.
 */
static void
publish_unlock(ArenaObject *self, Record *r, uint32_t state)
{
    /* New generation and the flag in one store, before anyone wakes. */
    store_release(&r->state, ((GENERATION(state) + 1) << 1) | STATE_FLAG);
    note_setter(r);
    uint32_t wake[WAKE_BATCH];
    int n = 0;
    wake_fired(self, r, wake, &n);
    unlock_word(self, &r->lock);
    wake_slots(self, wake, n);
    /* No lock held: a woken process queued on this CPU may run first. */
    handover_after_wake(woken_elsewhere(self, wake, n));
}

/*
 * Raise the flag and wake every waiter: 1 if this call raised it, 0 if it
 * was up.  Never blocks on the waiters: it only writes their words, issues
 * futex wakes and, on an idle machine, yields once (handover_after_wake).
 */
int
record_set(ArenaObject *self, Record *r)
{
    if (load_acquire(&r->state) & STATE_FLAG) return 0;
    lock_record(self, r);
    uint32_t state = load_acquire(&r->state);
    if (state & STATE_FLAG) {
        unlock_word(self, &r->lock);
        return 0;
    }
    publish_unlock(self, r, state);
    return 1;
}

/* set(index) -> True if this call raised the flag. */
PyObject *
Arena_set(ArenaObject *self, PyObject *arg)
{
    Record *r = parse_record(self, arg);
    if (r == NULL) return NULL;
    int raised = record_set(self, r);
    if (raised < 0) return NULL;
    return PyBool_FromLong(raised);
}

PyObject *
Arena_clear(ArenaObject *self, PyObject *arg)
{
    Record *r = parse_record(self, arg);
    if (r == NULL) return NULL;
    record_clear(r);
    Py_RETURN_NONE;
}

/* --- value slots --------------------------------------------------- */

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
 * Put `incoming` in slot `which` of a record, raise the flag with a new
 * generation and wake every waiter.  The record lock is held on entry and
 * released here.  What the slot held before is freed (a large block lives
 * on while readers still view it).
 */
void
record_publish_value(ArenaObject *self, Record *r, int which, const ValueSlot *incoming)
{
    ValueSlot *slot = (ValueSlot *)r->payload + which;
    ValueSlot old = *slot;
    /* The tag last, as one atomic store: holds() reads it without the lock. */
    slot->length = incoming->length;
    memcpy(&slot->where, &incoming->where, sizeof slot->where);
    store_release(&slot->tag, incoming->tag);
    release_values(self, &old, 1);
    /* The descriptor is complete before the state store makes it visible. */
    publish_unlock(self, r, load_acquire(&r->state));
}

/* Copies of at least this many bytes are made without the GIL. */
#define COPY_WITHOUT_GIL (1u << 20)

/*
 * store(index, which, parts, entry): store a pickled value in slot `which`
 * and publish it -- the whole write, one call.  `parts` is a tuple of
 * buffers.  One part is a plain pickle, placed by its size: inline in the
 * record up to VALUE_INLINE_MAX bytes, a small block up to SMALL_MAX (or
 * while the small region has room), a large block beyond (VALUE_PICKLE).
 * Several parts are the pieces of a frame (mpevent._serial.frame_parts),
 * copied one after another into a large block (VALUE_LARGE), which the
 * writer, attach entry `entry`, owns until it is published.  Raises
 * MemoryError when shared memory, the cap or the heap's range runs out:
 * the slot then keeps what it held and nothing stays allocated.
 */
PyObject *
Arena_store(ArenaObject *self, PyObject *args)
{
    unsigned long index, entry;
    int which;
    PyObject *parts;
    if (!PyArg_ParseTuple(args, "kiO!k:store", &index, &which, &PyTuple_Type, &parts, &entry))
        return NULL;
    if (check_record(self, index) < 0 || check_which(which) < 0 || check_entry(entry) < 0)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(parts);
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "store() needs a pickle or the parts of a frame");
        return NULL;
    }
    Py_buffer few[8];
    Py_buffer *views = n <= 8 ? few : PyMem_Calloc((size_t)n, sizeof(Py_buffer));
    if (views == NULL) return PyErr_NoMemory();
    Py_ssize_t got = 0;
    uint64_t total = 0;
    PyObject *result = NULL;
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(parts, got), &views[got], PyBUF_SIMPLE) < 0)
            goto done;
        total += (uint64_t)views[got].len;
    }
    Record *r = record_at(self, (uint32_t)index);
    ValueSlot incoming;
    memset(&incoming, 0, sizeof incoming);
    incoming.length = total > UINT32_MAX ? UINT32_MAX : (uint32_t)total;
    if (n == 1 && total <= VALUE_INLINE_MAX) {
        incoming.tag = VALUE_INLINE;
        memcpy(incoming.where.bytes, views[0].buf, total);
        lock_record(self, r);
        record_publish_value(self, r, which, &incoming);
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (n == 1 && total <= SMALL_MAX) {
        int error, carved;
        lock_word(self, &self->header->lock);
        uint64_t offset = small_take(self, (uint32_t)total, &error, &carved);
        unlock_word(self, &self->header->lock);
        if (error == 0) {
            memcpy(self->base + offset, views[0].buf, total);
            incoming.tag = VALUE_SMALL;
            incoming.where.location = offset;
            lock_record(self, r);
            record_publish_value(self, r, which, &incoming);
            if (carved) small_published(self); /* readers are awake: ready the next */
            result = Py_NewRef(Py_None);
            goto done;
        }
        if (error != REGION_FULL) { /* the small region has room, memory has not */
            raise_reserve_error(self, error, SMALL_MAX, "a value");
            goto done;
        }
    }
    uint64_t offset = large_take(self, total, (uint32_t)entry);
    if (offset == 0) goto done;
    char *target = self->base + offset + BLOCK_HEADER;
    if (total >= COPY_WITHOUT_GIL) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; target += views[i].len, i++)
            memcpy(target, views[i].buf, (size_t)views[i].len);
        Py_END_ALLOW_THREADS
    } else {
        for (Py_ssize_t i = 0; i < n; target += views[i].len, i++)
            memcpy(target, views[i].buf, (size_t)views[i].len);
    }
    LargeRefill refill;
    if (large_adopt(self, offset, (uint32_t)entry, &refill) < 0) {
        goto done;
    }
    incoming.tag = n == 1 ? VALUE_PICKLE : VALUE_LARGE;
    incoming.where.location = offset;
    lock_record(self, r);
    record_publish_value(self, r, which, &incoming);
    large_published(self, &refill); /* readers are awake: now ready the next block */
    result = Py_NewRef(Py_None);
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    if (views != few) PyMem_Free(views);
    return result;
}

/*
 * publish_spill(index, which, token, inode, length): publish a value the
 * writer put in spill file `token` (see spill.c), replacing the slot's old
 * value.
 */
PyObject *
Arena_publish_spill(ArenaObject *self, PyObject *args)
{
    unsigned long index;
    int which;
    unsigned long long token, inode, length;
    if (!PyArg_ParseTuple(args, "kiKKK:publish_spill", &index, &which, &token, &inode, &length))
        return NULL;
    if (check_record(self, index) < 0 || check_which(which) < 0) return NULL;
    if (self->header->spill_dir[0] == '\0') {
        PyErr_SetString(PyExc_ValueError, "this arena does not spill (MPEVENT_SPILL_DIR=off)");
        return NULL;
    }
    ValueSlot incoming;
    memset(&incoming, 0, sizeof incoming);
    incoming.tag = VALUE_SPILLED;
    incoming.length = length > UINT32_MAX ? UINT32_MAX : (uint32_t)length;
    incoming.where.spill.token = token;
    incoming.where.spill.inode = inode;
    add_fetch_relaxed(&self->header->spilled_values, 1);
    add_fetch_relaxed(&self->header->spilled_bytes, incoming.length);
    Record *r = record_at(self, (uint32_t)index);
    lock_record(self, r);
    record_publish_value(self, r, which, &incoming);
    Py_RETURN_NONE;
}

/* holds(index, which) -> bool: slot `which` has a value.  No lock: a
 * slot only goes from empty to full while its record lives. */
PyObject *
Arena_holds(ArenaObject *self, PyObject *args)
{
    unsigned long index;
    int which;
    if (!PyArg_ParseTuple(args, "ki:holds", &index, &which)) return NULL;
    if (check_record(self, index) < 0 || check_which(which) < 0) return NULL;
    ValueSlot *slot = (ValueSlot *)record_at(self, (uint32_t)index)->payload + which;
    return PyBool_FromLong(load_acquire(&slot->tag) != VALUE_NONE);
}

/*
 * load(index, which, known, entry) -> (generation, slot, tag, data): what
 * a result holds, read under the record lock in one call.  `which` is 0
 * (the value), 1 (the exception) or -1 (the value if there is one, else
 * the exception); `slot` is the slot read, or -1 with tag 0 and data None
 * when it is empty.  data is None as well when the generation equals
 * `known` (the caller has that value already).  Otherwise, by tag:
 *   INLINE, SMALL  bytes of a plain pickle (copied under the lock);
 *   LARGE, PICKLE  a BlockView of the block, pinned for attach entry
 *                  `entry` (bytes once the process has left the arena);
 *                  a frame, or a plain pickle;
 *   SPILLED        (fd, token, inode, length) of its file, opened under
 *                  the lock (spill.c);
 *   FAILED         (pid, exited) of a claimer that ended unset.
 */
PyObject *
Arena_load(ArenaObject *self, PyObject *args)
{
    unsigned long index, entry;
    int which;
    long long known;
    if (!PyArg_ParseTuple(args, "kiLk:load", &index, &which, &known, &entry)) return NULL;
    if (check_record(self, index) < 0 || check_entry(entry) < 0) return NULL;
    if (which != -1 && check_which(which) < 0) return NULL;
    Record *r = record_at(self, (uint32_t)index);
    ValueSlot *slots = (ValueSlot *)r->payload;
    /* Without the lock first: an empty slot, or the generation the caller
     * has, needs no data.  A store bumps the generation after its tag, so
     * the same generation read before and after the tag means the tag
     * belongs to it. */
    uint32_t before = GENERATION(load_acquire(&r->state));
    int seen = which != -1 ? which
                           : load_acquire(&slots[0].tag) != VALUE_NONE ? 0 : 1;
    uint8_t tag = load_acquire(&slots[seen].tag);
    if (tag == VALUE_NONE || (long long)before == known) {
        uint32_t after = GENERATION(load_acquire(&r->state));
        if (after == before)
            return Py_BuildValue("(IiIO)", before, tag == VALUE_NONE ? -1 : seen,
                                 (unsigned int)tag, Py_None);
    }
    lock_record(self, r);
    uint32_t generation = GENERATION(load_acquire(&r->state));
    if (which == -1) which = slots[0].tag != VALUE_NONE ? 0 : 1;
    ValueSlot slot = slots[which];
    if (slot.tag == VALUE_NONE || (long long)generation == known) {
        unlock_word(self, &r->lock);
        return Py_BuildValue("(IiIO)", generation, slot.tag == VALUE_NONE ? -1 : which,
                             (unsigned int)slot.tag, Py_None);
    }
    PyObject *data;
    switch (slot.tag) {
    case VALUE_INLINE:
        unlock_word(self, &r->lock);
        data = PyBytes_FromStringAndSize((const char *)slot.where.bytes,
                                         slot.length <= VALUE_INLINE_MAX ? slot.length : 0);
        break;
    case VALUE_SMALL:
        /* Copied under the lock: the block is freed under it.  A bytes
         * object is not tracked by the garbage collector. */
        data = PyBytes_FromStringAndSize(self->base + slot.where.location, slot.length);
        unlock_word(self, &r->lock);
        break;
    case VALUE_LARGE:
    case VALUE_PICKLE:
        if (large_pin_unless_forgotten(self, slot.where.location, (uint32_t)entry) == 0) {
            unlock_word(self, &r->lock);
            data = block_view_new(self, slot.where.location, (uint32_t)entry);
            break;
        }
        /* Left the arena (exiting), or 65535 views of it here: a copy. */
        data = PyBytes_FromStringAndSize(self->base + slot.where.location + BLOCK_HEADER,
                                         (Py_ssize_t)large_length(self, slot.where.location));
        unlock_word(self, &r->lock);
        break;
    case VALUE_SPILLED: {
        /* Opened under the lock: the file is the one the slot names (spill.c). */
        int fd = spill_open(self, &slot);
        int error = errno;
        unlock_word(self, &r->lock);
        if (fd < 0) {
            char path[SPILL_PATH_MAX];
            if (spill_path(self, slot.where.spill.token, path, sizeof path) < 0) path[0] = '\0';
            errno = error;
            PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
            return NULL;
        }
        data = Py_BuildValue("(iKKI)", fd, (unsigned long long)slot.where.spill.token,
                             (unsigned long long)slot.where.spill.inode, slot.length);
        if (data == NULL) os_close(fd);
        break;
    }
    case VALUE_FAILED:
        unlock_word(self, &r->lock);
        data = Py_BuildValue("(IO)", slot.where.failure.pid,
                             slot.where.failure.exited ? Py_True : Py_False);
        break;
    default:
        unlock_word(self, &r->lock);
        PyErr_Format(PyExc_RuntimeError, "value slot %d of record %lu has unknown tag %u",
                     which, index, (unsigned int)slot.tag);
        return NULL;
    }
    if (data == NULL) return NULL;
    return Py_BuildValue("(IiIN)", generation, which, (unsigned int)slot.tag, data);
}
