/*
 * Waiter slots and links: who may sleep, and on which records.
 *
 * Slot i owns link i; waiting on many records at once takes extra links.
 * Both tables grow page by page (reserved before first touched, arena.h),
 * under the arena lock, and a dead process's slots and links are reclaimed
 * by whoever finds it dead (slot_reclaim).
 */
#include "arena.h"

#include <string.h>

/*
 * Reserve the pages of slot `slot` and of its own link (arena lock held):
 * the two regions grow together, chunk by chunk.  Returns 0 or a
 * RESERVE_* error, having given back what it reserved.
 */
static int
reserve_slot_pages(ArenaObject *a, uint32_t slot)
{
    Header *h = a->header;
    uint64_t needed = (uint64_t)(slot + 1) * sizeof(Slot);
    if (needed <= h->slots_reserved) return 0;
    uint64_t capacity = (uint64_t)h->slot_capacity * sizeof(Slot);
    uint64_t slots_done = h->slots_reserved, links_done = h->slots_reserved;
    int error = grow_region(a, h->slots_offset, &slots_done, needed, capacity);
    if (error) return error;
    error = grow_region(a, h->links_offset, &links_done, needed, capacity);
    if (error) {
        unreserve_range(a, h->slots_offset + h->slots_reserved, slots_done - h->slots_reserved);
        return error;
    }
    h->slots_reserved = slots_done;
    return 0;
}

/* Put a slot back on the free list.  Arena lock held. */
static void
slot_give_back(ArenaObject *a, uint32_t slot)
{
    Header *h = a->header;
    Slot *s = &a->slots[slot];
    store_release(&s->in_use, 0);
    store_release(&s->loop, 0);
    store_relaxed(&s->owner, 0);
    store_relaxed(&s->owner_epoch, 0);
    s->next_free = h->slot_free;
    h->slot_free = slot + 1;
    h->slots_live--;
}

/* Put an extra link back on the free list.  Arena lock held. */
static void
link_give_back(ArenaObject *a, uint32_t link)
{
    Header *h = a->header;
    store_release(&a->links[link].flags, 0);
    a->links[link].next_free = h->link_free;
    h->link_free = link + 1;
    h->links_live--;
}

PyObject *
Arena_slot_alloc(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    if (load_relaxed(&self->held_entry) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "this process has not joined the arena");
        return NULL;
    }
    Header *h = self->header;
    lock_word(self, &h->lock);
    uint32_t slot;
    if (h->slot_free != 0) {
        slot = h->slot_free - 1;
        h->slot_free = self->slots[slot].next_free;
    } else if (h->slot_bump < h->slot_capacity) {
        int error = reserve_slot_pages(self, h->slot_bump);
        if (error) {
            unlock_word(self, &h->lock);
            raise_reserve_error(self, error, RESERVE_CHUNK, "a waiter slot");
            return NULL;
        }
        slot = h->slot_bump;
        store_release(&h->slot_bump, slot + 1); /* check_slot reads it lock-free */
    } else {
        unlock_word(self, &h->lock);
        PyErr_Format(self->state->full_error,
                     "all %u waiter slots of the arena are in use (one per waiting thread)",
                     h->slot_capacity);
        return NULL;
    }
    Slot *s = &self->slots[slot];
    store_release(&s->word, 0);
    store_release(&s->loop, 0); /* a reclaimed loop's slot, too */
    store_relaxed(&s->owner, (uint32_t)load_relaxed(&self->held_entry) + 1);
    store_relaxed(&s->owner_epoch, load_relaxed(&self->held_epoch));
    s->next_free = 0;
    store_release(&s->in_use, 1);
    /* Its own link: the slot is fixed while the link is allocated, and
     * written only under the arena lock (slot_reclaim reads it there). */
    store_relaxed(&self->links[slot].slot, slot);
    store_release(&self->links[slot].flags, 0);
    h->slots_live++;
    unlock_word(self, &h->lock);
    return PyLong_FromUnsignedLong(slot);
}

PyObject *
Arena_slot_free(ArenaObject *self, PyObject *arg)
{
    unsigned long slot;
    if (parse_slot(self, arg, &slot) < 0) return NULL;
    Header *h = self->header;
    lock_word(self, &h->lock);
    slot_give_back(self, (uint32_t)slot);
    unlock_word(self, &h->lock);
    Py_RETURN_NONE;
}

/*
 * slot_owners() -> [(slot, entry, epoch)]: the slots in use and the attach
 * entry of the process that holds each, so Python can ask which are dead.
 */
PyObject *
Arena_slot_owners(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *owners = PyList_New(0);
    if (owners == NULL) return NULL;
    uint32_t bump = load_acquire(&self->header->slot_bump);
    for (uint32_t i = 0; i < bump; i++) {
        Slot *s = &self->slots[i];
        if (!load_acquire(&s->in_use)) continue;
        if (append_new(owners, Py_BuildValue("III", i, load_relaxed(&s->owner) - 1,
                                             load_relaxed(&s->owner_epoch))) < 0) {
            Py_DECREF(owners);
            return NULL;
        }
    }
    return owners;
}

/*
 * slot_reclaim(slot, entry, epoch) -> bool: free the slot of a process that
 * died (the one that joined as `entry` at `epoch`), and every link it left:
 * queued links are taken out of their records' lists (under each record's
 * lock, so no setter can still write to the slot afterwards), its extra
 * links go back to the free list.  The caller must know that owner is
 * dead.  Two reclaimers may race for one slot (a dead entry's reclaimer
 * and a process out of slots): the first takes it under the arena lock by
 * clearing its owner, so the other -- or one holding a stale list, after
 * the slot went to a new owner -- finds it not theirs and does nothing.
 */
PyObject *
Arena_slot_reclaim(ArenaObject *self, PyObject *args)
{
    unsigned long slot;
    unsigned int entry, epoch;
    if (!PyArg_ParseTuple(args, "kII:slot_reclaim", &slot, &entry, &epoch)) return NULL;
    Header *h = self->header;
    if (slot >= load_acquire(&h->slot_bump)) {
        PyErr_Format(PyExc_ValueError, "slot %lu is not allocated", slot);
        return NULL;
    }
    uint32_t *mine = PyMem_Malloc(sizeof(uint32_t) * (h->link_capacity ? h->link_capacity : 1));
    if (mine == NULL) return PyErr_NoMemory();
    Slot *s = &self->slots[slot];
    uint32_t count = 0;
    lock_word(self, &h->lock);
    int ours = load_relaxed(&s->in_use) && load_relaxed(&s->owner) == entry + 1 &&
               load_relaxed(&s->owner_epoch) == epoch;
    if (ours) {
        store_relaxed(&s->owner, 0); /* being reclaimed: nobody else's any more */
        /* Which links are the slot's is decided under the arena lock: the
         * lock under which a link gets its slot and LINK_OWNED (link_take),
         * so a link given back and taken for another slot meanwhile is
         * never mistaken for this one's (src/native/models/links.cpp). */
        uint32_t bump = h->link_bump;
        for (uint32_t i = 0; i < bump; i++) {
            Link *l = &self->links[i];
            if (i < h->slot_capacity ? i == slot
                                     : (load_relaxed(&l->flags) & LINK_OWNED) &&
                                           load_relaxed(&l->slot) == slot)
                mine[count++] = i;
        }
    }
    unlock_word(self, &h->lock);
    if (!ours) {
        PyMem_Free(mine);
        Py_RETURN_FALSE;
    }
    for (uint32_t n = 0; n < count; n++) {
        uint32_t i = mine[n];
        Link *l = &self->links[i];
        /* Its owner is dead, so nobody queues it again; the record it is
         * queued on is read again under that record's lock. */
        uint32_t index = load_relaxed(&l->record);
        if ((load_acquire(&l->flags) & LINK_QUEUED) && index < load_acquire(&h->record_bump)) {
            Record *r = record_at(self, index);
            lock_record(self, r);
            if (load_relaxed(&l->record) == index) remove_link(self, r, i);
            unlock_word(self, &r->lock);
        }
        if (i >= h->slot_capacity) {
            lock_word(self, &h->lock);
            link_give_back(self, i);
            unlock_word(self, &h->lock);
        }
    }
    PyMem_Free(mine);
    lock_word(self, &h->lock);
    slot_give_back(self, (uint32_t)slot);
    unlock_word(self, &h->lock);
    Py_RETURN_TRUE;
}

/* An extra link for slot `slot` (in use): 0 and its index in *link, or -1
 * with an exception (no memory: MemoryError; none left: Full). */
int
link_take(ArenaObject *self, uint32_t slot, uint32_t *link)
{
    Header *h = self->header;
    lock_word(self, &h->lock);
    if (h->link_free != 0) {
        *link = h->link_free - 1;
        h->link_free = self->links[*link].next_free;
    } else if (h->link_bump < h->link_capacity) {
        uint64_t extra = (uint64_t)h->link_capacity - h->slot_capacity;
        uint64_t needed = (uint64_t)(h->link_bump + 1 - h->slot_capacity) * sizeof(Link);
        int error = grow_region(self, h->links_offset + (uint64_t)h->slot_capacity * sizeof(Link),
                                &h->links_reserved, needed, extra * sizeof(Link));
        if (error) {
            unlock_word(self, &h->lock);
            raise_reserve_error(self, error, RESERVE_CHUNK, "a waiter link");
            return -1;
        }
        *link = h->link_bump;
        store_release(&h->link_bump, *link + 1); /* check_link reads it lock-free */
    } else {
        unlock_word(self, &h->lock);
        PyErr_Format(self->state->full_error, "all %u waiter links of the arena are in use",
                     h->link_capacity);
        return -1;
    }
    Link *l = &self->links[*link];
    l->next = 0;
    store_relaxed(&l->record, 0);
    store_relaxed(&l->fired, 0);
    l->next_free = 0;
    store_relaxed(&l->slot, slot);
    store_release(&l->flags, LINK_OWNED);
    h->links_live++;
    unlock_word(self, &h->lock);
    return 0;
}

PyObject *
Arena_link_alloc(ArenaObject *self, PyObject *arg)
{
    unsigned long slot;
    uint32_t link;
    if (parse_slot(self, arg, &slot) < 0 || link_take(self, (uint32_t)slot, &link) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(link);
}

PyObject *
Arena_link_free(ArenaObject *self, PyObject *arg)
{
    unsigned long link = PyLong_AsUnsignedLong(arg);
    if (link == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    Header *h = self->header;
    if (link < h->slot_capacity || link >= load_acquire(&h->link_bump)) {
        PyErr_Format(PyExc_ValueError, "link %lu was not allocated with link_alloc", link);
        return NULL;
    }
    lock_word(self, &h->lock);
    link_give_back(self, (uint32_t)link);
    unlock_word(self, &h->lock);
    Py_RETURN_NONE;
}

