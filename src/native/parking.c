/*
 * The parking lot: waiter slots, links, futex sleeps and wakes.
 *
 * A waiting thread owns one slot per arena; its first word is the futex it
 * sleeps on.  Waiting on a record queues a link (slot -> record) on the
 * record's waiter list; set() dequeues every link, marks it fired and wakes
 * its slot.  A slot can be linked to many records at once (the hub,
 * mpevent.wait).  Slot i owns link i; waiting on many records takes extra
 * links.  Slots and links are reserved (arena.h) as their regions grow.
 */
#include "arena.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------------ */
/* futex and time                                                      */

void
futex_wake_all(uint32_t *word)
{
    os_wake_word(word, INT_MAX);
}

int
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
/* waiter lists (record lock held)                                     */

void
enqueue_link(ArenaObject *a, Record *r, uint32_t record, uint32_t link, uint32_t slot)
{
    Link *l = &a->links[link];
    l->slot = slot;
    l->record = record;
    l->fired = 0;
    uint32_t owned = __atomic_load_n(&l->flags, __ATOMIC_RELAXED) & LINK_OWNED;
    __atomic_store_n(&l->flags, owned | LINK_QUEUED, __ATOMIC_RELEASE);
    l->next = r->waiters;
    /* Publishing the head is the single store that puts the link in. */
    __atomic_store_n(&r->waiters, link + 1, __ATOMIC_RELEASE);
}

/* Returns 1 if the link was queued and is now removed. */
int
remove_link(ArenaObject *a, Record *r, uint32_t link)
{
    Link *l = &a->links[link];
    if (!(__atomic_load_n(&l->flags, __ATOMIC_ACQUIRE) & LINK_QUEUED)) return 0;
    uint32_t *prev = &r->waiters;
    uint32_t guard = a->header->link_capacity;
    while (*prev != 0 && guard--) {
        if (*prev == link + 1) {
            __atomic_store_n(prev, l->next, __ATOMIC_RELEASE);
            __atomic_and_fetch(&l->flags, ~LINK_QUEUED, __ATOMIC_RELEASE);
            return 1;
        }
        prev = &a->links[*prev - 1].next;
    }
    __atomic_and_fetch(&l->flags, ~LINK_QUEUED, __ATOMIC_RELEASE);
    return 0;
}

/*
 * Dequeue every waiter, mark it fired and set its slot's word; collect the
 * slots to wake after unlocking.  The word is written under the lock so a
 * waiter that finds itself dequeued knows no later write to its slot from
 * this record can arrive (its next wait may reuse the slot at once).
 */
void
wake_fired(ArenaObject *a, Record *r, uint32_t *wake, int *nwake)
{
    uint32_t next = r->waiters;
    uint32_t guard = a->header->link_capacity;
    __atomic_store_n(&r->waiters, 0, __ATOMIC_RELEASE);
    while (next != 0 && guard--) {
        Link *l = &a->links[next - 1];
        next = l->next;
        __atomic_and_fetch(&l->flags, ~LINK_QUEUED, __ATOMIC_RELEASE);
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

/* A set() has published its new state (record lock held): note the CPU it
 * ran on, the hint of spinning's rule 5 (the setter of a ping-pong is
 * usually the next setter too). */
void
note_setter(Record *r)
{
    int cpu = os_cpu();
    __atomic_store_n(&r->setter_cpu, (uint16_t)(cpu >= 0 && cpu < 0xffff ? cpu + 1 : 0),
                     __ATOMIC_RELAXED);
}

static __thread int spin_woke_sleeper; /* this thread's last set() woke a parked waiter */

/* Wake the slots wake_fired() collected (after unlocking), and remember for
 * spinning's rule 3 whether this thread woke anyone asleep: a thread woken
 * from sleep may be placed on this CPU. */
void
wake_slots(ArenaObject *a, const uint32_t *wake, int n)
{
    for (int i = 0; i < n; i++) futex_wake_all(&a->slots[wake[i]].word);
    spin_woke_sleeper = n > 0;
}

/* --- slots and links ---------------------------------------------- */

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
    s->in_use = 0;
    s->owner = 0;
    s->owner_epoch = 0;
    s->next_free = h->slot_free;
    h->slot_free = slot + 1;
    h->slots_live--;
}

/* Put an extra link back on the free list.  Arena lock held. */
static void
link_give_back(ArenaObject *a, uint32_t link)
{
    Header *h = a->header;
    a->links[link].flags = 0;
    a->links[link].next_free = h->link_free;
    h->link_free = link + 1;
    h->links_live--;
}

PyObject *
Arena_slot_alloc(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->held_entry < 0) {
        PyErr_SetString(PyExc_RuntimeError, "this process has not joined the arena");
        return NULL;
    }
    Header *h = self->header;
    lock_word(self, &h->lock, NULL);
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
        slot = h->slot_bump++;
    } else {
        unlock_word(self, &h->lock);
        PyErr_Format(FullError,
                     "all %u waiter slots of the arena are in use (one per waiting thread)",
                     h->slot_capacity);
        return NULL;
    }
    Slot *s = &self->slots[slot];
    s->word = 0;
    s->owner = (uint32_t)self->held_entry + 1;
    s->owner_epoch = self->held_epoch;
    s->next_free = 0;
    s->in_use = 1;
    self->links[slot].flags = 0;
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
    lock_word(self, &h->lock, NULL);
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
    uint32_t bump = self->header->slot_bump;
    for (uint32_t i = 0; i < bump; i++) {
        Slot *s = &self->slots[i];
        if (!__atomic_load_n(&s->in_use, __ATOMIC_ACQUIRE)) continue;
        if (append_new(owners, Py_BuildValue("III", i, s->owner - 1, s->owner_epoch)) < 0) {
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
    if (slot >= h->slot_bump) {
        PyErr_Format(PyExc_ValueError, "slot %lu is not allocated", slot);
        return NULL;
    }
    Slot *s = &self->slots[slot];
    lock_word(self, &h->lock, NULL);
    int ours = s->in_use && s->owner == entry + 1 && s->owner_epoch == epoch;
    if (ours) s->owner = 0; /* being reclaimed: nobody else's any more */
    unlock_word(self, &h->lock);
    if (!ours) Py_RETURN_FALSE;
    uint32_t bump = h->link_bump;
    for (uint32_t i = 0; i < bump; i++) {
        Link *l = &self->links[i];
        int mine = i < h->slot_capacity ? i == slot
                                        : (__atomic_load_n(&l->flags, __ATOMIC_ACQUIRE) & LINK_OWNED) &&
                                              l->slot == slot;
        if (!mine) continue;
        if (__atomic_load_n(&l->flags, __ATOMIC_ACQUIRE) & LINK_QUEUED) {
            uint32_t index = l->record;
            if (index < h->record_bump) {
                Record *r = record_at(self, index);
                lock_word(self, &r->lock, r);
                remove_link(self, r, i);
                unlock_word(self, &r->lock);
            }
        }
        if (i >= h->slot_capacity) {
            lock_word(self, &h->lock, NULL);
            link_give_back(self, i);
            unlock_word(self, &h->lock);
        }
    }
    lock_word(self, &h->lock, NULL);
    slot_give_back(self, (uint32_t)slot);
    unlock_word(self, &h->lock);
    Py_RETURN_TRUE;
}

PyObject *
Arena_link_alloc(ArenaObject *self, PyObject *arg)
{
    unsigned long slot;
    if (parse_slot(self, arg, &slot) < 0) return NULL;
    Header *h = self->header;
    lock_word(self, &h->lock, NULL);
    uint32_t link;
    if (h->link_free != 0) {
        link = h->link_free - 1;
        h->link_free = self->links[link].next_free;
    } else if (h->link_bump < h->link_capacity) {
        uint64_t extra = (uint64_t)h->link_capacity - h->slot_capacity;
        uint64_t needed = (uint64_t)(h->link_bump + 1 - h->slot_capacity) * sizeof(Link);
        int error = grow_region(self, h->links_offset + (uint64_t)h->slot_capacity * sizeof(Link),
                                &h->links_reserved, needed, extra * sizeof(Link));
        if (error) {
            unlock_word(self, &h->lock);
            raise_reserve_error(self, error, RESERVE_CHUNK, "a waiter link");
            return NULL;
        }
        link = h->link_bump++;
    } else {
        unlock_word(self, &h->lock);
        PyErr_Format(FullError, "all %u waiter links of the arena are in use",
                     h->link_capacity);
        return NULL;
    }
    memset(&self->links[link], 0, sizeof(Link));
    self->links[link].slot = (uint32_t)slot;
    self->links[link].flags = LINK_OWNED;
    h->links_live++;
    unlock_word(self, &h->lock);
    return PyLong_FromUnsignedLong(link);
}

PyObject *
Arena_link_free(ArenaObject *self, PyObject *arg)
{
    unsigned long link = PyLong_AsUnsignedLong(arg);
    if (link == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    Header *h = self->header;
    if (link < h->slot_capacity || link >= h->link_bump) {
        PyErr_Format(PyExc_ValueError, "link %lu was not allocated with link_alloc", link);
        return NULL;
    }
    lock_word(self, &h->lock, NULL);
    link_give_back(self, (uint32_t)link);
    unlock_word(self, &h->lock);
    Py_RETURN_NONE;
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
    lock_word(self, &r->lock, r);
    uint32_t state = __atomic_load_n(&r->state, __ATOMIC_ACQUIRE);
    if (!(state & STATE_FLAG)) {
        if (self->links[link].flags & LINK_QUEUED) {
            unlock_word(self, &r->lock);
            PyErr_Format(PyExc_RuntimeError, "link %lu is already queued", link);
            return NULL;
        }
        enqueue_link(self, r, (uint32_t)index, (uint32_t)link, (uint32_t)slot);
    }
    unlock_word(self, &r->lock);
    return PyLong_FromUnsignedLong(state);
}

/* dequeue(record, link) -> fired: take the link out if still queued. */
PyObject *
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
    lock_word(self, &r->lock, r);
    remove_link(self, r, (uint32_t)link);
    int fired = l->fired;
    unlock_word(self, &r->lock);
    return PyBool_FromLong(fired);
}

PyObject *
Arena_fired(ArenaObject *self, PyObject *arg)
{
    unsigned long link = PyLong_AsUnsignedLong(arg);
    if (link == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (check_link(self, link) < 0) return NULL;
    return PyBool_FromLong(__atomic_load_n(&self->links[link].fired, __ATOMIC_ACQUIRE));
}

/*
 * The watch: recovering from a setter killed mid-set() without a timer in
 * every sleep.
 *
 * A setter that dies after publishing a new generation but before waking
 * everyone leaves waiters asleep.  Rather than each waiter re-reading its
 * record on a timer (one wakeup a second per waiting thread), the threads
 * of a process that park on a record register on a process-local list,
 * and one of them, the *watcher*, sleeps with a RECHECK_NS timeout; the
 * others sleep with no timeout at all (unless their caller gave one).
 * Each time its timeout passes, the watcher looks at every registered
 * waiter: one whose record's generation moved while its slot word is
 * still 0, or whose word is 1 while it still sleeps, lost its wakeup, and
 * gets a futex wake (the word is left alone: the waiter sees the moved
 * generation and takes its link out itself, taking the dead setter's lock
 * over and finishing its wakeups for everyone).  When the watcher leaves,
 * it wakes another registered waiter to take over.  So an idle process
 * wakes about once a second in all, however many threads wait, and no
 * extra thread exists (one would make every later fork warn on 3.12+).
 */

static void spin_init(void); /* below, with the spinning */

typedef struct Parked {
    ArenaObject *arena;
    Slot *slot;
    Record *record;
    uint32_t generation;
    struct Parked *prev, *next;
} Parked;

static uint32_t watch_lock; /* a local_lock (locks.c) */
static Parked *parked_head;
static Parked *watcher; /* the registered waiter holding the watch, or NULL */

static void
watch_prepare_fork(void)
{
    local_lock(&watch_lock);
}

static void
watch_after_fork_parent(void)
{
    local_unlock(&watch_lock);
}

static void
watch_after_fork_child(void)
{
    /* Only the forking thread lives on, and it was not parked. */
    __atomic_store_n(&watch_lock, 0, __ATOMIC_RELAXED);
    parked_head = NULL;
    watcher = NULL;
}

void
watch_init(void)
{
    spin_init();
    note_lock_fault(pthread_atfork(watch_prepare_fork, watch_after_fork_parent, watch_after_fork_child));
}

static void
watch_register(Parked *p)
{
    local_lock(&watch_lock);
    p->prev = NULL;
    p->next = parked_head;
    if (parked_head != NULL) parked_head->prev = p;
    parked_head = p;
    local_unlock(&watch_lock);
}

static void
watch_unregister(Parked *p)
{
    local_lock(&watch_lock);
    if (p->prev != NULL) p->prev->next = p->next;
    else parked_head = p->next;
    if (p->next != NULL) p->next->prev = p->prev;
    if (watcher == p) {
        watcher = NULL;
        /* Hand the watch over: the woken thread finds it free and takes it. */
        if (parked_head != NULL) futex_wake_all(&parked_head->slot->word);
    }
    local_unlock(&watch_lock);
}

/* Take the watch if nobody holds it; returns whether `p` holds it. */
static int
watch_claim(Parked *p)
{
    local_lock(&watch_lock);
    if (watcher == NULL) watcher = p;
    int mine = watcher == p;
    local_unlock(&watch_lock);
    return mine;
}

/* The watcher's round: wake every registered waiter that lost its wakeup. */
static void
watch_round(void)
{
    local_lock(&watch_lock);
    for (Parked *p = parked_head; p != NULL; p = p->next) {
        uint32_t word = __atomic_load_n(&p->slot->word, __ATOMIC_ACQUIRE);
        uint32_t state = __atomic_load_n(&p->record->state, __ATOMIC_ACQUIRE);
        /* A waiter on a result whose claimer died is woken to fail it. */
        if (word != 0 || GENERATION(state) != p->generation || claim_lost(p->arena, p->record))
            futex_wake_all(&p->slot->word);
    }
    local_unlock(&watch_lock);
}

/*
 * Sleep on a slot's word until it is set, the deadline passes, or a signal
 * needs handling.  Returns 1 woken, 0 timed out, -1 error (exception set),
 * 2 when the process that claimed `watch` died (the caller fails it).
 * `watch`, if not NULL, is the record waited on: the waiter registers for
 * the watch (above) and returns 1 when its generation moves.  Without one,
 * the caller bounds the park and re-checks itself (multi-waits).
 */
static int
park_slot(ArenaObject *self, Slot *s, Record *watch, uint32_t generation, double timeout)
{
    long long deadline = timeout < 0 ? -1 : os_now_ns() + (long long)(timeout * 1e9);
    Parked parked = {.arena = self, .slot = s, .record = watch, .generation = generation};
    if (watch != NULL) watch_register(&parked);
    int result = -2;
    for (;;) {
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
            if (watch != NULL && claim_lost(self, watch)) {
                result = 2;
                break;
            }
            int watching = watch != NULL && watch_claim(&parked);
            long long wait_ns = watching ? RECHECK_NS : -1;
            if (deadline >= 0) {
                long long left = deadline - os_now_ns();
                if (left <= 0) {
                    result = 0;
                    break;
                }
                if (wait_ns < 0 || left < wait_ns) wait_ns = left;
            }
            int rc = os_wait_word(&s->word, 0, wait_ns);
            if (rc == EINTR) break;
            if (rc == ETIMEDOUT && watching) watch_round();
        }
        Py_END_ALLOW_THREADS
        if (result != -2) break;
        if (PyErr_CheckSignals() < 0) {
            result = -1;
            break;
        }
    }
    if (watch != NULL) watch_unregister(&parked);
    return result;
}

/*
 * Seconds from an already checked timeout: None (forever, -1) or a float.
 * Users' timeouts are read in one place, mpevent._checks.check_timeout;
 * the Python callers pass its result, so this only converts.
 */
int
parse_timeout(PyObject *arg, double *timeout)
{
    if (arg == Py_None) {
        *timeout = -1.0;
        return 0;
    }
    if (!PyFloat_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "timeout: a float from check_timeout() or None, not %s",
                     Py_TYPE(arg)->tp_name);
        return -1;
    }
    *timeout = PyFloat_AS_DOUBLE(arg);
    return 0;
}

/* park(slot, timeout) -> bool: sleep until the slot is woken (multi-wait). */
PyObject *
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
PyObject *
Arena_reset(ArenaObject *self, PyObject *arg)
{
    unsigned long slot;
    if (parse_slot(self, arg, &slot) < 0) return NULL;
    __atomic_store_n(&self->slots[slot].word, 0, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

/* wake(slot): wake a slot from outside any record (e.g. to stop the hub). */
PyObject *
Arena_wake(ArenaObject *self, PyObject *arg)
{
    unsigned long slot;
    if (parse_slot(self, arg, &slot) < 0) return NULL;
    __atomic_store_n(&self->slots[slot].word, 1, __ATOMIC_RELEASE);
    futex_wake_all(&self->slots[slot].word);
    Py_RETURN_NONE;
}

/*
 * Spinning before parking.
 *
 * A ping-pong between two processes costs two futex wakeups when both
 * sides sleep at once; a waiter that watches the state word for a few
 * microseconds first often sees the set() arrive and never sleeps, and the
 * setter, finding nobody queued, makes no system call at all.  A spin only
 * pays while the setter runs on *another* CPU, so a waiter spins only when
 * all of these hold (each one check, in this order):
 *
 *   1. spin_limit > 0: MPEVENT_SPIN (pause instructions), checked by
 *      Python and given to set_spin_limit(); SPIN_DEFAULT otherwise; 0
 *      with fewer than two usable CPUs (affinity, cgroup v2 quota), where
 *      a spinning waiter could only delay its setter.
 *   2. The thread's budget (adaptive, as glibc's adaptive mutexes): a spin
 *      that sees the set doubles it back toward the limit, one that does
 *      not takes a quarter off; below SPIN_MIN the thread parks at once and
 *      tries the whole limit again every SPIN_REPROBE waits.
 *   3. The thread's own last set() woke nobody parked (spin_woke_sleeper;
 *      every SPIN_REPROBE-th wait spins anyway): a thread it woke from
 *      sleep is often placed on its waker's CPU, where our spin would keep
 *      it from running -- the partner we wait for.  Two threads that
 *      both spin find nobody parked and keep spinning.
 *   4. Spins on this record have not missed SPIN_RECORD_MISSES times in a
 *      row (Record.spin_misses; every SPIN_REPROBE-th wait spins anyway):
 *      a record whose sets come long after its waiters start (a broadcast,
 *      a result of slow work) would cost every waiter of every process a
 *      whole window each time.  A spin that sees the set resets the count.
 *   5. Not on the CPU the record's last set() ran on (Record.setter_cpu):
 *      there the setter, usually the next setter too, can only run once we
 *      stop.  The kernel's optimistic spinning asks the same question
 *      ("is the owner running elsewhere?") of its own data; this is our
 *      nearest hint, and a wrong one costs one spin window.
 *   6. A free seat (Header.spin_seats): at most usable CPUs - 1 waiters of
 *      one arena spin at once, so N waiters of a broadcast do not take every
 *      CPU from the setter.  A seat holds a lease (CLOCK_MONOTONIC ns) that
 *      its spinner renews every SPIN_RENEW pauses; a lapsed lease is a free
 *      seat, so a spinner killed in its seat frees it within SPIN_SEAT_NS.
 *
 * Only blocking OS-thread waits spin (wait_record); the hub, asyncio and
 * gevent waits never do.  The GIL is released while spinning.  The choice
 * of SPIN_DEFAULT and the figures are in docs/design.md.
 */
#define SPIN_DEFAULT 10000
#define SPIN_MIN 16
#define SPIN_REPROBE 32
#define SPIN_RECORD_MISSES 4
#define SPIN_SEAT_NS 5000000LL /* a seat's lease, renewed while its spinner spins */
#define SPIN_RENEW 1024        /* pauses between renewals: tens of microseconds */

int spin_limit = 0;        /* set_spin_limit(); 0: never spin */
int spin_seats_usable = 0; /* seats of an arena a waiter may take */
static __thread int spin_budget = -1;
static __thread unsigned spin_skipped;

/* Counted per process for spin_stats() (tests, the benchmark's CPU column). */
static uint64_t spin_counts[7];
enum { SPUN, WON, SAME_CPU, NO_SEAT, LOW_BUDGET, AFTER_WAKE, RECORD_MISSES };

static void
count_spin(int what)
{
    __atomic_fetch_add(&spin_counts[what], 1, __ATOMIC_RELAXED);
}

/* Apply a limit (< 0: the default) and the CPU rule; returns the limit in force. */
static int
spin_configure(long requested)
{
    double cpus = os_usable_cpus();
    int seats = (int)cpus - 1;
    if (seats > SPIN_SEATS) seats = SPIN_SEATS;
    int limit = requested < 0 ? SPIN_DEFAULT : (int)requested;
    if (seats < 1) limit = 0;
    spin_seats_usable = limit > 0 ? seats : 0;
    spin_limit = limit;
    spin_budget = -1;
    return limit;
}

static void
spin_init(void)
{
    spin_configure(-1);
}

/* Take a free seat of the arena: its index, or -1 if none is free. */
static int
take_seat(Header *h, long long now)
{
    for (int i = 0; i < spin_seats_usable; i++) {
        int64_t lease = __atomic_load_n(&h->spin_seats[i], __ATOMIC_RELAXED);
        if (lease > now) continue;
        if (__atomic_compare_exchange_n(&h->spin_seats[i], &lease, now + SPIN_SEAT_NS, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            return i;
        }
    }
    return -1;
}

/* Spin until the flag is up or the thread's budget runs out; 1 if it is up. */
static int
spin_for_flag(ArenaObject *self, Record *r)
{
    if (spin_limit <= 0) return 0;
    if (spin_budget < 0) spin_budget = spin_limit;
    if (spin_budget < SPIN_MIN) {
        /* Re-probe with the whole limit: a peer that also stopped spinning
         * answers only after a futex wakeup, and a short probe would never
         * see it, leaving both sides asleep for good. */
        if (++spin_skipped % SPIN_REPROBE != 0) {
            count_spin(LOW_BUDGET);
            return 0;
        }
        spin_budget = spin_limit;
    }
    if (spin_woke_sleeper) {
        spin_woke_sleeper = 0;
        if (++spin_skipped % SPIN_REPROBE != 0) {
            count_spin(AFTER_WAKE);
            return 0;
        }
    }
    uint8_t misses = __atomic_load_n(&r->spin_misses, __ATOMIC_RELAXED);
    if (misses >= SPIN_RECORD_MISSES && ++spin_skipped % SPIN_REPROBE != 0) {
        count_spin(RECORD_MISSES);
        return 0;
    }
    int cpu = os_cpu();
    if (cpu >= 0 && __atomic_load_n(&r->setter_cpu, __ATOMIC_RELAXED) == cpu + 1) {
        count_spin(SAME_CPU);
        return 0;
    }
    int seat = take_seat(self->header, os_now_ns());
    if (seat < 0) {
        count_spin(NO_SEAT);
        return 0;
    }
    count_spin(SPUN);
    int seen = 0;
    int budget = spin_budget;
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < budget; i++) {
        if (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) & STATE_FLAG) {
            seen = 1;
            break;
        }
        if (i % SPIN_RENEW == SPIN_RENEW - 1) {
            /* Still here: the seat stays ours (a dead spinner's lapses). */
            __atomic_store_n(&self->header->spin_seats[seat], os_now_ns() + SPIN_SEAT_NS,
                             __ATOMIC_RELAXED);
        }
        cpu_relax();
    }
    __atomic_store_n(&self->header->spin_seats[seat], 0, __ATOMIC_RELEASE);
    Py_END_ALLOW_THREADS
    if (seen) {
        count_spin(WON);
        if (misses != 0) __atomic_store_n(&r->spin_misses, 0, __ATOMIC_RELAXED);
        spin_budget = budget * 2 > spin_limit ? spin_limit : budget * 2;
    } else {
        /* Counted without a lock: two spinners may count one miss, which
         * only makes the hint a little quicker. */
        misses = __atomic_load_n(&r->spin_misses, __ATOMIC_RELAXED);
        if (misses < 0xff) __atomic_store_n(&r->spin_misses, misses + 1, __ATOMIC_RELAXED);
        spin_budget = budget - budget / 4; /* a quarter less: one late set is noise */
    }
    return seen;
}

/* spinners() -> int: seats of this arena held now (waiters spinning in any process). */
PyObject *
Arena_spinners(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    long long now = os_now_ns();
    long held = 0;
    for (int i = 0; i < SPIN_SEATS; i++) {
        held += __atomic_load_n(&self->header->spin_seats[i], __ATOMIC_RELAXED) > now;
    }
    return PyLong_FromLong(held);
}

/* set_spin_limit(limit or None) -> int: the limit in force (0 on one CPU). */
PyObject *
native_set_spin_limit(PyObject *module, PyObject *arg)
{
    long requested = -1;
    if (arg != Py_None) {
        requested = PyLong_AsLong(arg);
        if (requested == -1 && PyErr_Occurred()) return NULL;
        if (requested < 0 || requested > SPIN_LIMIT_MAX) {
            PyErr_Format(PyExc_ValueError,
                         "a spin limit of %ld is out of range: give 0 (never spin) to "
                         "%d pause instructions",
                         requested, SPIN_LIMIT_MAX);
            return NULL;
        }
    }
    return PyLong_FromLong(spin_configure(requested));
}

/* spin_stats() -> dict: this process's spin decisions since import. */
PyObject *
native_spin_stats(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:i,s:i}", "spun",
        (unsigned long long)__atomic_load_n(&spin_counts[SPUN], __ATOMIC_RELAXED), "won",
        (unsigned long long)__atomic_load_n(&spin_counts[WON], __ATOMIC_RELAXED), "same_cpu",
        (unsigned long long)__atomic_load_n(&spin_counts[SAME_CPU], __ATOMIC_RELAXED),
        "no_seat", (unsigned long long)__atomic_load_n(&spin_counts[NO_SEAT], __ATOMIC_RELAXED),
        "low_budget",
        (unsigned long long)__atomic_load_n(&spin_counts[LOW_BUDGET], __ATOMIC_RELAXED),
        "after_wake",
        (unsigned long long)__atomic_load_n(&spin_counts[AFTER_WAKE], __ATOMIC_RELAXED),
        "record_misses",
        (unsigned long long)__atomic_load_n(&spin_counts[RECORD_MISSES], __ATOMIC_RELAXED),
        "limit", spin_limit, "seats", spin_seats_usable);
}

/*
 * The whole single-record wait: True when the flag is up on entry or a
 * set() happened while waiting; False on timeout.  timeout < 0: forever.
 * The caller has checked the flag and the zero timeout already.
 */
static PyObject *
wait_record(ArenaObject *self, Record *r, unsigned long slot, double timeout)
{
    Slot *s = &self->slots[slot];
    uint32_t index = (uint32_t)(((char *)r - self->records) / RECORD_SIZE);

    if (spin_for_flag(self, r)) Py_RETURN_TRUE;
    lock_word(self, &r->lock, r);
    uint32_t state = __atomic_load_n(&r->state, __ATOMIC_ACQUIRE);
    if (state & STATE_FLAG) {
        unlock_word(self, &r->lock);
        Py_RETURN_TRUE;
    }
    __atomic_store_n(&s->word, 0, __ATOMIC_RELAXED);
    enqueue_link(self, r, index, (uint32_t)slot, (uint32_t)slot);
    unlock_word(self, &r->lock);

    int woken = park_slot(self, s, r, GENERATION(state), timeout);
    if (woken == 2 && record_fail_claim(self, r, CLAIM_DEAD) < 0) woken = -1;
    if (woken == 1 && __atomic_load_n(&s->word, __ATOMIC_ACQUIRE)) {
        Py_RETURN_TRUE; /* a setter dequeued us: nothing left to undo */
    }
    /* Timed out, interrupted, or saw the generation move without being
     * dequeued (its setter died): take our link out ourselves. */
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    lock_word(self, &r->lock, r);
    remove_link(self, r, (uint32_t)slot);
    int fired = GENERATION(__atomic_load_n(&r->state, __ATOMIC_ACQUIRE)) != GENERATION(state);
    unlock_word(self, &r->lock);
    if (exc_type != NULL) {
        PyErr_Restore(exc_type, exc_value, exc_tb);
        return NULL;
    }
    return PyBool_FromLong(fired);
}

/*
 * wait(record, slot, timeout) -> bool: the whole single-record wait in one
 * call.  True when the flag is up on entry or a set() happened while
 * waiting; False on timeout.  timeout: None (forever) or seconds, checked
 * and found positive by the caller (Linkable._wait_ready).
 */
PyObject *
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
    unsigned long slot = PyLong_AsUnsignedLong(args[1]);
    if (slot == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (check_slot(self, slot) < 0) return NULL;
    return wait_record(self, r, slot, timeout);
}
