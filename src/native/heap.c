/*
 * The value heap: where AsyncResult values live, in the arena's own mapping.
 *
 * Two allocators, chosen by size (measured in docs/design.md):
 *
 *   - Small blocks (64 B .. 64 KiB, powers of two) hold plain pickles up to
 *     64 KiB; store() copies a pickle in and publishes it in one C call.
 *     Per-class free lists; carved from a region reserved a chunk at a time,
 *     and a chunk ahead of the region's end once a carved value is
 *     published (small_published: their reserve).
 *
 *   - Large blocks hold everything else, written straight from the pickle's
 *     out-of-band buffers (one copy) and read back without a copy: a
 *     BlockView exports the block read-only, and NumPy arrays unpickled
 *     from it keep it alive.  Sizes are classes of four per power of two,
 *     page granular, with a header page each (LargeBlock: state, size,
 *     refs, and a count of reader pins per attached process).  Free blocks
 *     go on per-class LIFO lists, so the most recently used block, whose
 *     pages are still reserved and mapped, is reused first: no file is
 *     created, sized, mapped or unlinked per value, and no page is zeroed
 *     again.  Only the pages a value needs are reserved, so a class's
 *     rounding costs address space, not memory.  When the free blocks'
 *     reserved bytes would pass the watermark (MPEVENT_HEAP_WATERMARK), a
 *     freed block's data pages are punched out (MADV_REMOVE) instead.
 *     Each class has two lists: warm blocks (pages kept) and cold ones
 *     (pages punched out), and a take pops a cold block only when no warm
 *     one is left.  With one list, a burst of kept values past the
 *     watermark left cold blocks on top of the warm ones, and a value set
 *     and dropped in turn then took the same cold block every time,
 *     faulting in all of its pages again (32 MiB: 21 ms instead of 3 ms),
 *     while the warm blocks below it were never reached.
 *
 * Life of a large block: FREE -> WRITING_BY(the writer's attach entry)
 * (large_take) -> LIVE (store(); refs = 1 for the value slot) ->
 * FREE when refs drops to 0.  refs also counts reader pins: load()
 * (records.c) pins the block for the reading process under the record lock,
 * so a view outlives a new set(), the record's release and the setter's
 * death.  When a process dies or leaves, heap_forget() walks the blocks
 * (they are carved in order, each header says its size) and drops its pins
 * and its unpublished blocks: a writer killed mid-copy never publishes, and
 * its block comes back.
 *
 * The reserve: writers do not wait for fresh pages.  A value in a block
 * whose pages had to be faulted in (carved fresh, or the reserve's own
 * block) is published first -- readers are woken -- and then one more
 * block of its class is carved and faulted in, and left on the class's
 * free list marked BLOCK_RESERVE: the next value of that size finds its
 * pages ready.  Kept results (a list of AsyncResults read at the end) are
 * the pattern this serves: each takes a fresh block, and without the
 * reserve each set() paid for faulting its pages in before the reader
 * could be woken.  A value that took a cold block (its pages given back)
 * refills it too.  The reserve is bounded (RESERVE_MAX bytes, one block per
 * class at a time; not by the watermark, which free blocks of other sizes
 * may fill), counted against the cap like any reserved page, given
 * back at once when a reservation for a real value fails (the value comes
 * first), and given back by the next heap call of any process once it has
 * sat unused for RESERVE_IDLE_NS.  Measured in docs/design.md ("Values").
 *
 * Freeing is lock-free (a CAS push), because a view may be released by the
 * garbage collector at any allocation, also while this thread holds the
 * arena lock.  Pops happen under the arena lock, so a popped head cannot be
 * popped and pushed again meanwhile (no ABA).
 */
#include "arena.h"

#include <string.h>

/* --- small blocks ---------------------------------------------------- */

static int
small_class(uint32_t nbytes)
{
    int cls = 0;
    while (((uint32_t)1 << (SMALL_MIN_SHIFT + cls)) < nbytes) cls++;
    return cls;
}

/*
 * Arena lock held.  Returns the block's offset in the segment with *error
 * 0; else 0 with *error a RESERVE_* code, or REGION_FULL when the region is
 * exhausted (the caller then uses a large block).  *carved: 1 if the block
 * came from the region's end, not a free list (see small_published).
 */
uint64_t
small_take(ArenaObject *a, uint32_t nbytes, int *error, int *carved)
{
    Header *h = a->header;
    int cls = small_class(nbytes);
    uint64_t size = (uint64_t)1 << (SMALL_MIN_SHIFT + cls);
    uint64_t offset = h->small_free[cls];
    *error = 0;
    *carved = offset == 0;
    if (offset != 0) {
        h->small_free[cls] = *(uint64_t *)(a->base + offset);
    } else if (h->small_bump + size <= h->small_capacity) {
        *error = grow_region(a, h->small_offset, &h->small_reserved, h->small_bump + size,
                             h->small_capacity);
        if (*error) return 0;
        offset = h->small_offset + h->small_bump;
        store_release(&h->small_bump, h->small_bump + size);
    } else {
        *error = REGION_FULL;
        return 0;
    }
    h->small_used += size;
    return offset;
}

/*
 * After a small value carved from the region's end is published (readers
 * woken): if less than a chunk is reserved past the end, reserve one more
 * now, so that the next carved value -- a kept result, usually -- finds its
 * pages ready instead of faulting them in before its wakeup (the small
 * blocks' reserve; large blocks have theirs, below).  No lock held; never
 * fails (memory that cannot be had now is asked for again by the next
 * value, which then reports it).
 */
void
small_published(ArenaObject *a)
{
    Header *h = a->header;
    if (load_relaxed(&a->held_entry) < 0) return;
    lock_word(a, &h->lock);
    if (h->small_reserved < h->small_capacity &&
        h->small_reserved - h->small_bump < RESERVE_CHUNK)
        (void)grow_region(a, h->small_offset, &h->small_reserved, h->small_reserved + 1,
                          h->small_capacity);
    unlock_word(a, &h->lock);
}

/* Arena lock held. */
void
small_give(ArenaObject *a, uint64_t offset, uint32_t nbytes)
{
    Header *h = a->header;
    int cls = small_class(nbytes);
    *(uint64_t *)(a->base + offset) = h->small_free[cls];
    h->small_free[cls] = offset;
    h->small_used -= (uint64_t)1 << (SMALL_MIN_SHIFT + cls);
}

/* --- large blocks ---------------------------------------------------- */

static inline LargeBlock *
block_at(ArenaObject *a, uint64_t offset)
{
    return (LargeBlock *)(a->base + offset);
}

/* The class of a block of `bytes` (header included) and its size. */
static int
large_class(uint64_t bytes, uint64_t *size)
{
    uint64_t floor_size = (uint64_t)1 << LARGE_MIN_SHIFT;
    if (bytes <= floor_size) {
        *size = page_align(floor_size);
        return 0;
    }
    int p = 63 - __builtin_clzll(bytes - 1); /* 2^p < bytes <= 2^(p+1) */
    uint64_t quarter = (uint64_t)1 << (p - 2);
    uint64_t k = (bytes - ((uint64_t)1 << p) + quarter - 1) / quarter; /* 1..4 */
    /* Whole pages, so that every block starts on a page (with 64 KiB
     * pages some classes share a size; each keeps its own free list). */
    *size = page_align(((uint64_t)1 << p) + k * quarter);
    return (p - LARGE_MIN_SHIFT) * LARGE_STEPS + (int)k;
}

/* Put a block whose refs reached 0 (or an unpublished one) on its free list. */
static void
large_free(ArenaObject *a, uint64_t offset)
{
    Header *h = a->header;
    LargeBlock *b = block_at(a, offset);
    uint64_t data = b->resident - BLOCK_HEADER;
    uint64_t kept = load_relaxed(&h->large_free_resident);
    /* The reserve is bounded on its own (RESERVE_MAX), not by the
     * watermark: free blocks of other classes filling the watermark would
     * otherwise punch every refill out at once, and each kept value would
     * fault its pages in before its wakeup again. */
    if (data > 0 && !(b->flags & BLOCK_RESERVE) && kept + data > h->free_watermark) {
        /* Past the watermark: give the data pages back to the OS. */
        unreserve_range(a, offset + BLOCK_HEADER, data);
        b->resident = BLOCK_HEADER;
        sub_fetch_relaxed(&h->large_resident, data);
        add_fetch_relaxed(&h->large_given_back, data);
        data = 0;
    }
    add_fetch_relaxed(&h->large_free_resident, data);
    sub_fetch_relaxed(&h->large_used, b->size);
    store_relaxed(&b->refs, 0);
    b->length = 0;
    store_release(&b->state, BLOCK_FREE);
    uint64_t *head = data > 0 ? &h->large_free[b->cls] : &h->large_cold[b->cls];
    uint64_t old = load_acquire(head);
    do {
        b->next_free = old;
    } while (!cas_weak_acq_rel(head, &old, offset));
}

/* Arena lock held: pops are serialised, pushes may race (see the top). */
static uint64_t
pop_list(ArenaObject *a, uint64_t *head)
{
    uint64_t old = load_acquire(head);
    while (old != 0) {
        uint64_t next = block_at(a, old)->next_free;
        if (cas_weak_acq_rel(head, &old, next))
            break;
    }
    return old;
}

/* Arena lock held: a free block of class `cls`, warm before cold; 0 if none. */
static uint64_t
large_pop(ArenaObject *a, int cls)
{
    uint64_t offset = pop_list(a, &a->header->large_free[cls]);
    return offset != 0 ? offset : pop_list(a, &a->header->large_cold[cls]);
}

/* Drop `count` references; the last one frees the block. */
void
large_unref(ArenaObject *a, uint64_t offset, uint32_t count)
{
    LargeBlock *b = block_at(a, offset);
    if (sub_fetch_acq_rel(&b->refs, count) == 0) {
        store_release(&b->state, BLOCK_FREEING);
        large_free(a, offset);
    }
}

/* Record lock held, block published there: pin it for process `entry`. */
int
large_pin(ArenaObject *a, uint64_t offset, uint32_t entry)
{
    LargeBlock *b = block_at(a, offset);
    if (load_relaxed(&b->pins[entry]) == UINT16_MAX) return -1;
    add_fetch_acq_rel(&b->refs, 1);
    add_fetch_acq_rel(&b->pins[entry], 1);
    return 0;
}

static void
large_unpin(ArenaObject *a, uint64_t offset, uint32_t entry)
{
    sub_fetch_acq_rel(&block_at(a, offset)->pins[entry], 1);
    large_unref(a, offset, 1);
}

/* A reader's pin (record lock held), unless this process has left and its
 * pins were forgotten (heap_forget): then -1, and the reader copies. */
int
large_pin_unless_forgotten(ArenaObject *a, uint64_t offset, uint32_t entry)
{
    local_lock(&a->process_lock);
    int rc = load_relaxed(&a->pins_forgotten) ? -1 : large_pin(a, offset, entry);
    local_unlock(&a->process_lock);
    return rc;
}

/* Free what value slots point to.  Record lock held (small blocks are
 * freed under it, so a reader copying one out never sees it reused). */
void
release_values(ArenaObject *a, ValueSlot *slots, int count)
{
    for (int i = 0; i < count; i++) {
        ValueSlot *slot = &slots[i];
        if (slot->tag == VALUE_SMALL) {
            /* The record lock comes before the arena lock. */
            lock_word(a, &a->header->lock);
            small_give(a, slot->where.location, slot->length);
            unlock_word(a, &a->header->lock);
        } else if (VALUE_IN_BLOCK(slot->tag)) {
            large_unref(a, slot->where.location, 1);
        } else if (slot->tag == VALUE_SPILLED) {
            spill_release(a, slot);
        }
        store_release(&slot->tag, VALUE_NONE); /* holds() reads it lock-free */
    }
}

static int
check_block(ArenaObject *a, uint64_t offset, uint32_t state)
{
    Header *h = a->header;
    uint64_t bump = load_acquire(&h->large_bump);
    if (offset < h->large_offset || offset >= h->large_offset + bump ||
        (offset - h->large_offset) % page_size != 0 ||
        BLOCK_STATE(load_acquire(&block_at(a, offset)->state)) != state) {
        PyErr_Format(PyExc_ValueError, "offset %llu is not a large block in state %u",
                     (unsigned long long)offset, state);
        return -1;
    }
    return 0;
}

/*
 * advise_huge() -> bool: ask for huge pages for the large-block region
 * (MADV_HUGEPAGE), for a /dev/shm mounted huge=advise (_arena decides).
 * A 2 MiB page is faulted in, zeroed and mapped as one: a 32 MiB value
 * takes 16 page faults instead of 8,192.  False if the kernel refused.
 */
PyObject *
Arena_advise_huge(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    Header *h = self->header;
    uintptr_t start = (uintptr_t)(self->base + h->large_offset);
    uintptr_t end = start + h->large_capacity;
    uintptr_t huge = os_huge_page_size();
    if (huge == 0) Py_RETURN_FALSE;
    start = (start + huge - 1) & ~(huge - 1);
    end &= ~(huge - 1);
    if (end <= start) Py_RETURN_FALSE;
    return PyBool_FromLong(os_advise_huge((void *)start, end - start));
}

/* --- the reserve (see the top) ------------------------------------------ */

#define RESERVE_MAX (64ull << 20)           /* data bytes the reserve may hold */
#define RESERVE_IDLE_NS 5000000000LL        /* unused this long: given back */

static int64_t
monotonic_ns(void)
{
    return (int64_t)os_now_ns();
}

/* Arena lock held: give back the pages of every reserve block.  The free
 * lists are walked from their heads: pops are ours (the lock), and a
 * racing push only puts a node before the head we read. */
static void
reserve_drop_locked(ArenaObject *a)
{
    Header *h = a->header;
    if (load_relaxed(&h->reserve_bytes) == 0) return;
    for (int cls = 0; cls < LARGE_CLASSES; cls++) {
        uint64_t offset = load_acquire(&h->large_free[cls]);
        for (uint32_t guard = 0; offset != 0 && guard < 1024; guard++) {
            LargeBlock *b = block_at(a, offset);
            if (b->flags & BLOCK_RESERVE) {
                uint64_t data = b->resident - BLOCK_HEADER;
                b->flags &= ~BLOCK_RESERVE;
                unreserve_range(a, offset + BLOCK_HEADER, data);
                b->resident = BLOCK_HEADER;
                sub_fetch_relaxed(&h->large_resident, data);
                sub_fetch_relaxed(&h->large_free_resident, data);
                sub_fetch_relaxed(&h->reserve_bytes, data);
                add_fetch_relaxed(&h->large_given_back, data);
            }
            offset = b->next_free;
        }
    }
}

/* Arena lock held: a reserve nobody used for RESERVE_IDLE_NS goes back. */
static void
reserve_expire_locked(ArenaObject *a)
{
    Header *h = a->header;
    if (load_relaxed(&h->reserve_bytes) != 0 &&
        monotonic_ns() - load_relaxed(&h->reserve_stamp) > RESERVE_IDLE_NS)
        reserve_drop_locked(a);
}

/* Arena lock held: carve a block of `size` bytes (class `cls`) from the
 * region's end, its header page reserved; 0 with *error set if not. */
static uint64_t
carve_locked(ArenaObject *a, int cls, uint64_t size, int *error)
{
    Header *h = a->header;
    *error = 0;
    if (h->large_bump + size > h->large_capacity) {
        *error = REGION_FULL;
        return 0;
    }
    uint64_t offset = h->large_offset + h->large_bump;
    *error = reserve_range(a, offset, BLOCK_HEADER);
    if (*error) return 0;
    LargeBlock *b = block_at(a, offset);
    memset(b, 0, sizeof(LargeBlock));
    b->size = size;
    b->cls = (uint32_t)cls;
    b->resident = BLOCK_HEADER;
    add_fetch_relaxed(&h->large_resident, BLOCK_HEADER);
    /* The header is whole before the bump makes it walkable. */
    store_release(&h->large_bump, h->large_bump + size);
    return offset;
}

/* After publishing a block that needed fresh pages: one more of its class,
 * with as many pages faulted in as that value needed (not the whole class:
 * kept values must cost their size, not their class's), for the next value.
 * No lock held; never fails (a reserve that cannot be had is not there). */
static void
reserve_refill(ArenaObject *a, int cls, uint64_t size, uint64_t resident)
{
    Header *h = a->header;
    if (load_relaxed(&a->held_entry) < 0) return;
    lock_word(a, &h->lock);
    uint64_t data = resident - BLOCK_HEADER;
    int error = 0;
    uint64_t offset = 0;
    if (load_acquire(&h->large_free[cls]) == 0 &&
        load_relaxed(&h->reserve_bytes) + data <= RESERVE_MAX) {
        /* A cold block of the class before a new one: address space is
         * carved once. */
        offset = pop_list(a, &h->large_cold[cls]);
        if (offset == 0) offset = carve_locked(a, cls, size, &error);
    }
    if (offset != 0) {
        /* Ours while we fault it in, as a block being written: if this
         * process dies meanwhile, heap_forget gives it back. */
        LargeBlock *b = block_at(a, offset);
        store_release(&b->state, BLOCK_WRITING_BY(load_relaxed(&a->held_entry)));
        add_fetch_relaxed(&h->large_used, size); /* large_free subtracts */
    }
    unlock_word(a, &h->lock);
    if (offset == 0) return;
    LargeBlock *b = block_at(a, offset);
    int faulted = reserve_range(a, offset + BLOCK_HEADER, data) == 0;
    uint32_t expected = BLOCK_WRITING_BY(load_relaxed(&a->held_entry));
    if (!cas_acq_rel(&b->state, &expected, BLOCK_FREEING)) {
        /* heap_forget took it: this process is leaving, and the block is
         * free and may be someone's already.  Its pages stay (counted in
         * the cap until reused): punching them now could hit the new
         * owner's value. */
        return;
    }
    if (faulted) {
        add_fetch_relaxed(&h->large_resident, data);
        b->resident = resident;
        b->flags = BLOCK_RESERVE;
        add_fetch_relaxed(&h->reserve_bytes, data);
        store_relaxed(&h->reserve_stamp, monotonic_ns()); /* no lock held here */
    }
    large_free(a, offset); /* onto the class's free list, reserved or not */
}

/*
 * large_take(length, entry): a large block for `length` bytes of data (at
 * offset + BLOCK_HEADER), reserved, owned by attach entry `entry` until
 * published.  Returns 0 with MemoryError set when shared memory, the cap
 * or the heap's address range runs out (after giving the reserve back);
 * nothing is left allocated then.
 */
uint64_t
large_take(ArenaObject *self, uint64_t length, uint32_t entry)
{
    Header *h = self->header;
    if (length > h->large_capacity) {
        PyErr_Format(PyExc_MemoryError,
                     "a value of %llu bytes does not fit the arena's value heap of %llu bytes; "
                     "raise MPEVENT_ARENA_HEAP (address space only, not memory)",
                     (unsigned long long)length, (unsigned long long)h->large_capacity);
        return 0;
    }
    uint64_t size;
    int cls = large_class(BLOCK_HEADER + length, &size);
    uint64_t need = page_align(BLOCK_HEADER + length);
    lock_word(self, &h->lock);
    reserve_expire_locked(self);
    uint64_t offset = large_pop(self, cls);
    LargeBlock *b;
    int error = 0;
    uint32_t flags = 0;
    if (offset != 0) {
        b = block_at(self, offset);
        sub_fetch_relaxed(&h->large_free_resident, b->resident - BLOCK_HEADER);
        if (b->flags & BLOCK_RESERVE) { /* the reserve's block: refill it once published */
            sub_fetch_relaxed(&h->reserve_bytes, b->resident - BLOCK_HEADER);
            flags = BLOCK_REFILL;
        } else if (b->resident < need) {
            /* A cold block (or a warm one too small): its pages are faulted
             * in before this value's wakeup, as a carved block's are, so
             * the reserve is refilled after it too. */
            flags = BLOCK_REFILL;
        }
    } else {
        offset = carve_locked(self, cls, size, &error);
        if (offset == 0 && error != REGION_FULL) {
            reserve_drop_locked(self); /* a real value before the reserve */
            offset = carve_locked(self, cls, size, &error);
        }
        if (offset == 0) {
            unlock_word(self, &h->lock);
            if (error == REGION_FULL) {
                PyErr_Format(PyExc_MemoryError,
                             "the arena's value heap (%llu bytes of address space) has no room "
                             "for a value of %llu bytes; raise MPEVENT_ARENA_HEAP",
                             (unsigned long long)h->large_capacity, (unsigned long long)length);
            } else {
                raise_reserve_error(self, error, need, "a value");
            }
            return 0;
        }
        b = block_at(self, offset);
        flags = BLOCK_REFILL;
    }
    b->length = length;
    b->flags = flags;
    store_relaxed(&b->refs, 0);
    store_release(&b->state, BLOCK_WRITING_BY(entry));
    add_fetch_relaxed(&h->large_used, size);
    unlock_word(self, &h->lock);
    if (b->resident < need) {
        /* Outside the lock: reserving 32 MiB takes milliseconds. */
        error = reserve_range(self, offset + b->resident, need - b->resident);
        if (error) {
            /* The reserve gives way to a real value: drop it, try once more. */
            lock_word(self, &h->lock);
            reserve_drop_locked(self);
            unlock_word(self, &h->lock);
            error = reserve_range(self, offset + b->resident, need - b->resident);
        }
        if (error) {
            large_abandon(self, offset, entry);
            raise_reserve_error(self, error, need, "a value");
            return 0;
        }
        add_fetch_relaxed(&h->large_resident, need - b->resident);
        b->resident = need;
    }
    return offset;
}

/* block_alloc(length, entry) -> offset: a large block taken for `entry` and
 * never published, as a writer killed while copying in leaves one (for
 * tests only: values are written by store(), in records.c). */
PyObject *
Arena_block_alloc(ArenaObject *self, PyObject *args)
{
    unsigned long long length;
    unsigned long entry;
    if (!PyArg_ParseTuple(args, "Kk:block_alloc", &length, &entry)) return NULL;
    if (entry >= ATTACH_ENTRIES) {
        PyErr_Format(PyExc_ValueError, "attach entry %lu is outside the table", entry);
        return NULL;
    }
    uint64_t offset = large_take(self, length, (uint32_t)entry);
    if (offset == 0) return NULL;
    return PyLong_FromUnsignedLongLong(offset);
}

/* For records.c, after a block is published (readers woken): refill the
 * reserve if this block used it up or had to be faulted in. */
void
large_published(ArenaObject *a, const LargeRefill *refill)
{
    if (refill->flags & BLOCK_REFILL) reserve_refill(a, refill->cls, refill->size, refill->resident);
}

/* Free a block that `entry` took and never published (its writer failed),
 * unless heap_forget freed it already (the writer's process is leaving). */
void
large_abandon(ArenaObject *a, uint64_t offset, uint32_t entry)
{
    uint32_t expected = BLOCK_WRITING_BY(entry);
    if (cas_acq_rel(&block_at(a, offset)->state, &expected, BLOCK_FREEING)) large_free(a, offset);
}

/*
 * For records.c: a block that `entry` wrote becomes LIVE, about to be
 * published in a value slot, with the slot's reference.  One CAS from
 * "being written by `entry`": a block heap_forget took back meanwhile (and
 * that someone else may have taken since) is refused, never published twice.
 * On refusal -1 with ValueError set; the block is not ours to free.
 */
int
large_adopt(ArenaObject *a, uint64_t offset, uint32_t entry, LargeRefill *refill)
{
    if (check_block(a, offset, BLOCK_WRITING) < 0) return -1;
    LargeBlock *b = block_at(a, offset);
    /* Read now: once published, the block may be freed by anyone. */
    refill->flags = b->flags;
    refill->cls = (int)b->cls;
    refill->size = b->size;
    refill->resident = b->resident;
    uint32_t expected = BLOCK_WRITING_BY(entry);
    if (!cas_acq_rel(&b->state, &expected, BLOCK_LIVE)) {
        PyErr_Format(PyExc_ValueError,
                     "the value block at %llu was taken back from its writer (its process "
                     "left the arena while writing)", (unsigned long long)offset);
        return -1;
    }
    /* Nobody counts references before the block is in a value slot. */
    store_release(&b->refs, 1);
    return 0;
}

uint64_t
large_length(ArenaObject *a, uint64_t offset)
{
    return block_at(a, offset)->length;
}

/*
 * heap_forget(entry): the process of attach entry `entry` is gone (dead,
 * or leaving): drop its reader pins and free the blocks it was writing.
 */
PyObject *
Arena_heap_forget(ArenaObject *self, PyObject *arg)
{
    unsigned long entry = PyLong_AsUnsignedLong(arg);
    if (entry == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (entry >= ATTACH_ENTRIES) {
        PyErr_Format(PyExc_ValueError, "attach entry %lu is outside the table", entry);
        return NULL;
    }
    Header *h = self->header;
    if (load_relaxed(&self->held_entry) == (long)entry) {
        /* From now on this process pins nothing and unpins nothing: the
         * walk below drops every pin it holds (the process lock makes the
         * flag and a pin taken or dropped beside it one step each). */
        local_lock(&self->process_lock);
        store_relaxed(&self->pins_forgotten, 1);
        local_unlock(&self->process_lock);
    }
    uint64_t bump = load_acquire(&h->large_bump);
    uint64_t position = 0;
    while (position < bump) {
        uint64_t offset = h->large_offset + position;
        LargeBlock *b = block_at(self, offset);
        uint64_t size = b->size;
        if (size == 0) break; /* cannot happen: headers are written before the bump */
        uint16_t pins = exchange_acq_rel(&b->pins[entry], 0);
        if (pins) large_unref(self, offset, pins);
        /* One CAS from "being written by this entry": a block it wrote
         * once and that someone else is writing now is not its own
         * (src/native/models/blocks.cpp). */
        TEST_POINT_GIL("forget-block");
        uint32_t expected = BLOCK_WRITING_BY(entry);
        if (cas_acq_rel(&b->state, &expected, BLOCK_FREEING)) large_free(self, offset);
        position += size;
    }
    Py_RETURN_NONE;
}

PyObject *
Arena_heap_statistics(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    Header *h = self->header;
#define LOAD(field) (unsigned long long)load_relaxed(&h->field)
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K}", "small_used", LOAD(small_used),
        "small_carved", LOAD(small_bump), "small_reserved", LOAD(small_reserved),
        "large_used", LOAD(large_used), "large_carved", LOAD(large_bump), "large_resident",
        LOAD(large_resident), "large_free_resident", LOAD(large_free_resident),
        "large_given_back", LOAD(large_given_back), "free_watermark", LOAD(free_watermark),
        "shm_reserved", LOAD(shm_reserved), "shm_cap", LOAD(shm_cap), "reserve_bytes",
        LOAD(reserve_bytes));
#undef LOAD
}

/* --- zero-copy views ------------------------------------------------- */

/*
 * A BlockView exports a large block's data read-only and holds this
 * process's pin on it while it lives.  Every live view is on its
 * interpreter's list (NativeState.live_views, under views_lock) so that a
 * fork can pin them for the child too.  Only the main interpreter can
 * fork, and only its views live on in the child.
 */
struct BlockViewObject {
    PyObject_HEAD
    ArenaObject *arena;
    uint64_t block;
    uint64_t length;
    uint32_t entry;
    int pinned;
    struct BlockViewObject *prev, *next;
};

/* A view of a block pinned for `entry` (the pin passes to the view). */
PyObject *
block_view_new(ArenaObject *a, uint64_t block, uint32_t entry)
{
    NativeState *state = a->state;
    BlockViewObject *view = PyObject_New(BlockViewObject, state->view_type);
    if (view == NULL) {
        large_unpin(a, block, entry);
        return NULL;
    }
    Py_INCREF(a);
    view->arena = a;
    view->block = block;
    view->length = block_at(a, block)->length;
    view->entry = entry;
    view->pinned = 1;
    view->prev = NULL;
    local_lock(&state->views_lock);
    view->next = state->live_views;
    if (state->live_views != NULL) state->live_views->prev = view;
    state->live_views = view;
    local_unlock(&state->views_lock);
    return (PyObject *)view;
}

static void
BlockView_dealloc(BlockViewObject *view)
{
    NativeState *state = view->arena->state;
    PyTypeObject *type = Py_TYPE(view);
    local_lock(&state->views_lock);
    if (view->prev != NULL) view->prev->next = view->next;
    else state->live_views = view->next;
    if (view->next != NULL) view->next->prev = view->prev;
    local_unlock(&state->views_lock);
    if (view->pinned) {
        ArenaObject *a = view->arena;
        local_lock(&a->process_lock); /* not both this unpin and heap_forget's */
        if (!load_relaxed(&a->pins_forgotten)) large_unpin(a, view->block, view->entry);
        local_unlock(&a->process_lock);
    }
    Py_DECREF(view->arena);
    PyObject_Free(view);
    Py_DECREF(type);
}

static int
BlockView_getbuffer(BlockViewObject *view, Py_buffer *buffer, int flags)
{
    if (flags & PyBUF_WRITABLE) {
        PyErr_SetString(PyExc_BufferError,
                        "values read from shared memory are read-only; ask for a private "
                        "writable copy with AsyncResult.get(copy=True)");
        return -1;
    }
    char *data = view->arena->base + view->block + BLOCK_HEADER;
    return PyBuffer_FillInfo(buffer, (PyObject *)view, data, (Py_ssize_t)view->length, 1, flags);
}


static PyObject *
BlockView_repr(BlockViewObject *view)
{
    return PyUnicode_FromFormat("<mpevent value block at %llu: %llu bytes>",
                                (unsigned long long)view->block,
                                (unsigned long long)view->length);
}

static PyType_Slot BlockView_slots[] = {
    {Py_tp_dealloc, BlockView_dealloc},
    {Py_tp_repr, BlockView_repr},
    {Py_tp_doc, "A read-only view of a value in shared memory; keeps it alive while it lives."},
    {Py_bf_getbuffer, BlockView_getbuffer},
    {0, NULL},
};

PyType_Spec BlockViewSpec = {
    .name = "mpevent.shm._native.BlockView",
    .basicsize = sizeof(BlockViewObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = BlockView_slots,
};

/*
 * Fork: the child inherits every view.  Before the fork each pinned view
 * takes an extra reference on its block, so the parent dropping its view
 * meanwhile cannot free it; the child turns that reference into a pin of
 * its own attach entry once it has joined.  A child that dies before
 * joining (or a fork that fails) leaks those references: a block is never
 * freed under a view, at worst kept too long.
 */
PyObject *
native_before_fork(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    NativeState *state = PyModule_GetState(module);
    local_lock(&state->views_lock);
    for (BlockViewObject *v = state->live_views; v != NULL; v = v->next)
        if (v->pinned && !load_relaxed(&v->arena->pins_forgotten))
            add_fetch_acq_rel(&block_at(v->arena, v->block)->refs, 1);
    local_unlock(&state->views_lock);
    Py_RETURN_NONE;
}

/* after_fork_child(entry): in the child, once it joined the arena as `entry`. */
PyObject *
Arena_after_fork_child(ArenaObject *self, PyObject *arg)
{
    unsigned long entry = PyLong_AsUnsignedLong(arg);
    if (entry == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (entry >= ATTACH_ENTRIES) {
        PyErr_Format(PyExc_ValueError, "attach entry %lu is outside the table", entry);
        return NULL;
    }
    local_lock(&self->state->views_lock);
    for (BlockViewObject *v = self->state->live_views; v != NULL; v = v->next) {
        if (v->arena != self || !v->pinned || load_relaxed(&self->pins_forgotten)) continue;
        add_fetch_acq_rel(&block_at(self, v->block)->pins[entry], 1);
        v->entry = (uint32_t)entry;
    }
    local_unlock(&self->state->views_lock);
    Py_RETURN_NONE;
}

/* --- copying out ------------------------------------------------------ */

/*
 * copy_bytes(buffer) -> bytes: a private copy of a buffer, for values that
 * own their memory (bytes).  A large copy lands in freshly mapped pages;
 * faulting them in one call (MADV_POPULATE_WRITE) costs less than faulting
 * them one by one during the copy.
 *
 * Huge pages while they pay (docs/design.md, "Values").  A copy's pages are
 * advised huge, which makes a dropped 32 MiB value's copy 5 ms instead of
 * 12 ms: glibc maps and unmaps a copy that large, and the huge pages just
 * given back are taken again.  But on a VM that reports free memory to its
 * host (virtio-balloon's free page reporting), a huge page nobody used
 * lately is exactly what was reported, and populating it costs the host's
 * faults on every 4 KiB: kept 32 MiB copies took 62-76 ms each against
 * 12-13 ms in small pages.  So the populate is timed, and after two huge
 * populates in a row slower than small pages would be (HUGE_SLOW_NS_PER_MIB,
 * twice what small pages took here), this process copies into small pages
 * for good.  Process-wide, like the page size: one verdict for one kernel.
 */
#define POPULATE_MIN (256u * 1024u)
#define HUGE_SLOW_NS_PER_MIB 500000LL

static long long huge_slow_ns_per_mib = HUGE_SLOW_NS_PER_MIB;
static int huge_slow_in_a_row;  /* 2 or more: no more huge pages for copies */
static unsigned long long huge_copies; /* copies advised huge, for the test surface */

/* For the test surface: the slowness threshold, and a fresh verdict;
 * returns the threshold it replaced and how many copies were advised huge. */
long long
copy_huge_threshold_set(long long ns_per_mib, unsigned long long *copies)
{
    long long was = exchange_acq_rel(&huge_slow_ns_per_mib, ns_per_mib);
    store_relaxed(&huge_slow_in_a_row, 0);
    *copies = load_relaxed(&huge_copies);
    return was;
}

static void
prefault(char *start, size_t length)
{
    uintptr_t first = ((uintptr_t)start + page_size - 1) & ~(uintptr_t)(page_size - 1);
    uintptr_t end = ((uintptr_t)start + length) & ~(uintptr_t)(page_size - 1);
    if (end <= first) return;
    uintptr_t huge = load_relaxed(&huge_slow_in_a_row) < 2 ? os_huge_page_size() : 0;
    uintptr_t huge_first = huge ? (first + huge - 1) & ~(huge - 1) : 0;
    uintptr_t huge_end = huge ? end & ~(huge - 1) : 0;
    if (huge_end <= huge_first || !os_advise_huge((void *)huge_first, huge_end - huge_first)) {
        os_populate((void *)first, end - first);
        return;
    }
    add_fetch_relaxed(&huge_copies, 1);
    long long began = os_now_ns();
    os_populate((void *)first, end - first);
    long long spent = os_now_ns() - began;
    long long per_mib = (long long)(((unsigned long long)spent << 20) / (end - first));
    if (per_mib > load_relaxed(&huge_slow_ns_per_mib))
        add_fetch_relaxed(&huge_slow_in_a_row, 1);
    else
        store_relaxed(&huge_slow_in_a_row, 0);
}

PyObject *
native_copy_bytes(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *copy = PyBytes_FromStringAndSize(NULL, view.len);
    if (copy != NULL) {
        char *target = PyBytes_AS_STRING(copy);
        if ((size_t)view.len >= POPULATE_MIN) {
            Py_BEGIN_ALLOW_THREADS
            prefault(target, (size_t)view.len);
            memcpy(target, view.buf, (size_t)view.len);
            Py_END_ALLOW_THREADS
        } else {
            memcpy(target, view.buf, (size_t)view.len);
        }
    }
    PyBuffer_Release(&view);
    return copy;
}
