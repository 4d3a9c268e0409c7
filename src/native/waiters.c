/*
 * Waiter lists: the links queued on a record, and how set() fires them.
 *
 * A waiting thread owns one slot per arena (slots.c); its first word is the
 * futex it sleeps on.  Waiting on a record queues a link (slot -> record)
 * on the record's waiter list; set() dequeues every link, marks it fired
 * and wakes its slot.  A slot can be linked to many records at once (the
 * hub, mpevent.wait).  Every list operation here runs under the record's
 * lock (locks.c).
 */
#include "arena.h"

#include <limits.h>

/* futex and time                                                      */

void
futex_wake_all(uint32_t *word)
{
    os_wake_word(word, INT_MAX);
}

int
check_slot(ArenaObject *a, unsigned long slot)
{
    if (slot >= load_acquire(&a->header->slot_bump) || !load_acquire(&a->slots[slot].in_use)) {
        PyErr_Format(PyExc_ValueError, "slot %lu is not allocated", slot);
        return -1;
    }
    return 0;
}

/* Convert a Python int argument to a slot index that is allocated. */
int
parse_slot(ArenaObject *a, PyObject *arg, unsigned long *slot)
{
    *slot = PyLong_AsUnsignedLong(arg);
    if (*slot == (unsigned long)-1 && PyErr_Occurred()) return -1;
    return check_slot(a, *slot);
}

static int
check_link(ArenaObject *a, unsigned long link)
{
    if (link >= load_acquire(&a->header->link_bump) && link >= a->header->slot_capacity) {
        PyErr_Format(PyExc_ValueError, "link %lu is not allocated", link);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* waiter lists (record lock held)                                     */

void
enqueue_link(ArenaObject *a, Record *r, uint32_t record, uint32_t link)
{
    Link *l = &a->links[link];
    /* l->slot is the link's for as long as it is allocated (slots.c). */
    store_relaxed(&l->record, record);
    store_relaxed(&l->fired, 0);
    uint32_t owned = load_relaxed(&l->flags) & LINK_OWNED;
    store_release(&l->flags, owned | LINK_QUEUED);
    l->next = r->waiters;
    /* Publishing the head is the single store that puts the link in. */
    store_release(&r->waiters, link + 1);
}

/* Returns 1 if the link was queued and is now removed. */
int
remove_link(ArenaObject *a, Record *r, uint32_t link)
{
    Link *l = &a->links[link];
    if (!(load_acquire(&l->flags) & LINK_QUEUED)) return 0;
    uint32_t *prev = &r->waiters;
    uint32_t guard = a->header->link_capacity;
    while (*prev != 0 && guard--) {
        if (*prev == link + 1) {
            store_release(prev, l->next);
            and_fetch_release(&l->flags, ~LINK_QUEUED);
            return 1;
        }
        prev = &a->links[*prev - 1].next;
    }
    and_fetch_release(&l->flags, ~LINK_QUEUED);
    return 0;
}

/*
 * Wake one slot whose word was set: a datagram to its event loop if it is
 * one and the loop can be reached (notify.c), else a futex wake -- which
 * an event loop's notifier thread turns into an eventfd write.
 */
static void
wake_slot(ArenaObject *a, uint32_t index)
{
    Slot *s = &a->slots[index];
    uint32_t loop = load_acquire(&s->loop);
    if (loop != 0 && os_send_wakeup(loop, index) == 0) return;
    futex_wake_all(&s->word);
}

/*
 * Dequeue every waiter, mark it fired and set its slot's word; collect the
 * slots to wake after unlocking.
 *
 * The rule: everything this does to a link and its slot is done under the
 * record lock, and the link's fields are read before its fired flag is
 * published.  A waiter retires a fired link only under the same lock
 * (Arena_dequeue), so once it has, no write of this set() to the link or
 * the slot can still arrive (its next wait may reuse both at once); what
 * is left after unlocking is the wake itself, a futex wake or a datagram,
 * which a slot's next owner takes as a spurious wakeup.  fired comes
 * before the word: a loop that sees its word set scans for fired links
 * (src/native/models/wakeup.cpp).  The word is set with an OR, not a
 * store: a read-modify-write continues the release sequence of whoever set
 * the word before (notifier_stop's stop flag), so the notifier's exchange
 * that reads this value sees their writes too; a plain store would cut it.
 */
void
wake_fired(ArenaObject *a, Record *r, uint32_t *wake, int *nwake)
{
    uint32_t next = r->waiters;
    uint32_t guard = a->header->link_capacity;
    store_release(&r->waiters, 0);
    while (next != 0 && guard--) {
        Link *l = &a->links[next - 1];
        uint32_t slot = load_relaxed(&l->slot);
        next = l->next;
        and_fetch_release(&l->flags, ~LINK_QUEUED);
        store_release(&l->fired, 1);
        fetch_or_release(&a->slots[slot].word, SLOT_WOKEN);
        if (*nwake < WAKE_BATCH) {
            wake[(*nwake)++] = slot;
        } else {
            wake_slot(a, slot);
        }
    }
}

/*
 * Take a record's lock.  If it was taken over from a dead holder
 * (lock_word), finish what the holder may have left half done: a set()
 * that published the flag but had not woken everyone.  Waking under the
 * lock is fine.
 */
void
lock_record(ArenaObject *a, Record *r)
{
    if (lock_word(a, &r->lock) && (load_acquire(&r->state) & STATE_FLAG)) {
        uint32_t wake[WAKE_BATCH];
        int n = 0;
        wake_fired(a, r, wake, &n);
        wake_slots(a, wake, n);
    }
}

/* A set() has published its new state (record lock held): note the CPU it
 * ran on, the hint of spinning's rule 5 (the setter of a ping-pong is
 * usually the next setter too). */
void
note_setter(Record *r)
{
    int cpu = os_cpu();
    store_relaxed(&r->setter_cpu, (uint16_t)(cpu >= 0 && cpu < 0xffff ? cpu + 1 : 0));
}


/* Wake the slots wake_fired() collected (after unlocking), and remember for
 * spinning's rule 3 whether this thread woke anyone asleep: a thread woken
 * from sleep may be placed on this CPU. */
void
wake_slots(ArenaObject *a, const uint32_t *wake, int n)
{
    for (int i = 0; i < n; i++) wake_slot(a, wake[i]);
    spin_woke_sleeper = n > 0;
}

/* How many of the slots just woken belong to other processes: only those
 * can use this CPU at once (a thread of ours first needs the GIL, or at
 * least this thread's return).  For handing over (spin.c). */
int
woken_elsewhere(ArenaObject *a, const uint32_t *wake, int n)
{
    uint32_t ours = (uint32_t)load_relaxed(&a->held_entry) + 1;
    int others = 0;
    for (int i = 0; i < n; i++) others += load_relaxed(&a->slots[wake[i]].owner) != ours;
    return others;
}


/*
 * enqueue(record, link, slot) -> state.  If the flag is down, queue the
 * link so the next set() fires it and wakes the slot; returns the state
 * word read under the lock either way (flag up: nothing was queued).
 */
PyObject *
Arena_enqueue(ArenaObject *self, PyObject *args)
{
    unsigned long index, link, slot;
    if (!PyArg_ParseTuple(args, "kkk:enqueue", &index, &link, &slot)) return NULL;
    if (check_record(self, index) < 0 || check_link(self, link) < 0 ||
        check_slot(self, slot) < 0)
        return NULL;
    Record *r = record_at(self, (uint32_t)index);
    lock_record(self, r);
    uint32_t state = load_acquire(&r->state);
    const char *refused = NULL;
    if (!(state & STATE_FLAG)) {
        Link *l = &self->links[link];
        if (load_relaxed(&l->slot) != slot)
            refused = "link %lu is not the slot's";
        else if (load_acquire(&l->flags) & LINK_QUEUED)
            refused = "link %lu is already queued";
        else
            enqueue_link(self, r, (uint32_t)index, (uint32_t)link);
    }
    unlock_word(self, &r->lock);
    if (refused != NULL) {
        PyErr_Format(PyExc_RuntimeError, refused, link);
        return NULL;
    }
    return PyLong_FromUnsignedLong(state);
}

/*
 * dequeue(record, link) -> fired: take the link out if still queued.
 * Always under the record lock, even for a link seen fired: that is what
 * tells the waiter the setter is done with its link and slot (wake_fired).
 */
PyObject *
Arena_dequeue(ArenaObject *self, PyObject *args)
{
    unsigned long index, link;
    if (!PyArg_ParseTuple(args, "kk:dequeue", &index, &link)) return NULL;
    if (check_record(self, index) < 0 || check_link(self, link) < 0) return NULL;
    Record *r = record_at(self, (uint32_t)index);
    Link *l = &self->links[link];
    lock_record(self, r);
    remove_link(self, r, (uint32_t)link);
    int fired = load_relaxed(&l->fired);
    unlock_word(self, &r->lock);
    return PyBool_FromLong(fired);
}

PyObject *
Arena_fired(ArenaObject *self, PyObject *arg)
{
    unsigned long link = PyLong_AsUnsignedLong(arg);
    if (link == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (check_link(self, link) < 0) return NULL;
    return PyBool_FromLong(load_acquire(&self->links[link].fired));
}

/*
 * fired_among(links) -> list: the links among the keys of the dict
 * `links` whose fired flag is up, in its order.  One call for a waiter
 * that holds many links (the hub): its wakeup lands on a cold CPU, where
 * each Python step of a scan costs several times what it does warm.
 */
PyObject *
Arena_fired_among(ArenaObject *self, PyObject *links)
{
    if (!PyDict_Check(links)) {
        PyErr_Format(PyExc_TypeError, "fired_among: a dict keyed by link, not %s",
                     Py_TYPE(links)->tp_name);
        return NULL;
    }
    PyObject *fired = PyList_New(0);
    if (fired == NULL) return NULL;
    Py_ssize_t position = 0;
    PyObject *key, *value;
    int failed = 0;
    /* The hub calls this beside threads that queue and leave links (its
     * hot path takes no lock): without the GIL the dict is read in its
     * own critical section, as one atomic look. */
#ifdef Py_BEGIN_CRITICAL_SECTION
    Py_BEGIN_CRITICAL_SECTION(links);
#endif
    while (!failed && PyDict_Next(links, &position, &key, &value)) {
        unsigned long link = PyLong_AsUnsignedLong(key);
        failed = (link == (unsigned long)-1 && PyErr_Occurred()) || check_link(self, link) < 0 ||
                 (load_acquire(&self->links[link].fired) && PyList_Append(fired, key) < 0);
    }
#ifdef Py_BEGIN_CRITICAL_SECTION
    Py_END_CRITICAL_SECTION();
#endif
    if (failed) Py_CLEAR(fired);
    return fired;
}

