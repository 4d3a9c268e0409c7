/*
 * Waiting, whole: every sleep of a waiter slot, and the one watch over
 * all of them.  A thread sleeps on its slot's word until a record it
 * waits on is set; a parking lot's driver (the hub, a loop's notifier,
 * notify.c) sleeps here too, on its lot's links.
 *
 * The contract of every wait here (wait, wait_any):
 *   - A record whose flag is up on entry is answered at once, before a
 *     slot is touched: a wait that does not sleep needs no memory.  The
 *     caller passes its thread's slot, or -1 while it has none; a wait
 *     that must sleep without one returns None, and the caller allocates
 *     a slot (mpevent.shm._parking) and calls again.
 *   - A waiter reports a record set when its generation moved during the
 *     wait, even if clear() lowered the flag again (CPython's
 *     test_set_and_clear).
 *   - A wakeup that never came is found by one rule, claims.c's
 *     record_recheck(): a setter that died after publishing leaves the
 *     generation moved (a set, whoever wakes us); a claimer that died
 *     unset leaves a claim whose owner is gone (claim_lost), which is
 *     failed, once, and is then a set too.  Every sleeper -- a single
 *     wait, a multi-wait, a parking lot's driver -- is registered with
 *     the one watch (below), which applies the rule once a second for
 *     all of them and wakes only those whose records moved.
 *
 * The watch: one per process, over every parked slot, for the wakeups that
 * never came.
 *
 * A setter that dies after publishing a new generation but before waking
 * everyone, or a claimer that dies unset, leaves waiters asleep.  Rather
 * than each sleeper re-reading its records on a timer (one wakeup a second
 * per waiting thread, hub and event loop), every slot that parks registers
 * what it waits on here -- one record (a single wait), or a set of links
 * (a multi-wait, the hub's or a loop's parking lot: mpevent.shm._parking) --
 * and one of the registered sleepers, the *watcher*, sleeps with a
 * RECHECK_NS timeout; the others sleep with no timeout at all (unless
 * their caller gave one).  Each time its timeout passes, the watcher looks
 * at every registered sleeper by the one rule (claims.c):
 *
 *   - a single waiter whose record moved, or whose word says SLOT_WOKEN
 *     while it still sleeps, gets a futex wake (the word is left alone: it
 *     sees the moved generation and takes its link out itself, taking the
 *     dead setter's lock over and finishing its wakeups for everyone);
 *   - a set whose records moved (or, for a lot, that is empty: its driver
 *     then retires idle) gets SLOT_RECHECK ORed into its word and a wake:
 *     its driver re-checks its links (the hub, a loop through its notifier
 *     thread, wait_any), and is otherwise never woken.
 *
 * So an idle process wakes about once a second in all, however many
 * threads, hubs and loops wait, and no extra thread exists (one would make
 * every later fork warn on 3.12+).  watch_park() is the one sleep of every
 * registered slot.
 *
 * The hand-over, and why it is a bit in the sleeper's word: the watch is
 * never taken, it is given, under the watch lock.  The first waiter to
 * register gets it (watch_register); a watcher that leaves gives it to the
 * new head of the list (watch_unregister), so the list is never without a
 * watcher while anyone is on it.  Its new holder may be anywhere between
 * asking whether it watches (watch_holds, "no") and its untimed futex
 * wait, so a bare futex wake could come before the wait and be lost; the
 * giver therefore ORs SLOT_WATCH into the holder's word first.  The futex
 * wait compares the word with 0, so it returns at once, and watch_park
 * clears the bit and asks again: "yes", a timed sleep.
 */

#include "arena.h"

#include <errno.h>

static uint32_t watch_lock; /* a local_lock (local.c) */
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
    store_relaxed(&watch_lock, 0);
    parked_head = NULL;
    watcher = NULL;
}

void
watch_init(void)
{
    note_lock_fault(os_at_fork(watch_prepare_fork, watch_after_fork_parent, watch_after_fork_child));
}

void
watch_register(Parked *p)
{
    local_lock(&watch_lock);
    p->prev = NULL;
    p->next = parked_head;
    if (parked_head != NULL) parked_head->prev = p;
    parked_head = p;
    if (watcher == NULL) watcher = p;
    local_unlock(&watch_lock);
}

void
watch_unregister(Parked *p)
{
    local_lock(&watch_lock);
    if (p->prev != NULL) p->prev->next = p->next;
    else parked_head = p->next;
    if (p->next != NULL) p->next->prev = p->prev;
    if (watcher == p) {
        /* Hand the watch over (see the top): given, then announced in the
         * holder's word, so a wake before its sleep is not lost. */
        watcher = parked_head;
        if (watcher != NULL) {
            fetch_or_release(&watcher->slot->word, SLOT_WATCH);
            futex_wake_all(&watcher->slot->word);
        }
    }
    local_unlock(&watch_lock);
}

/* Whether `p` holds the watch (it is handed over, never taken). */
static int
watch_holds(Parked *p)
{
    local_lock(&watch_lock);
    int mine = watcher == p;
    local_unlock(&watch_lock);
    return mine;
}

/* Whether a record of `set` moved by the one rule (or the set is empty and
 * `when_empty`).  Its lock is innermost but for the process lock. */
static int
watch_set_moved(ArenaObject *a, WatchSet *set, int when_empty)
{
    local_lock(&set->lock);
    int moved = when_empty && set->count == 0;
    for (size_t i = 0; i < set->count && !moved; i++)
        moved = record_moved(a, record_at(a, set->items[i].index), set->items[i].generation) != 0;
    local_unlock(&set->lock);
    return moved;
}

/*
 * The watcher's round: wake every registered sleeper that lost its wakeup.
 *
 * A set's SLOT_RECHECK may land after its driver's watch_park returned for
 * a real wakeup (SLOT_WOKEN) and before it unregistered; the driver's next
 * reset (an exchange) then clears it unread.  That is a round's delay,
 * never a loss: the record still reads moved against the generation its
 * link was queued at (nothing fired that link), so the next round, with
 * the driver parked and registered again, flags it again.
 */
static void
watch_round(void)
{
    local_lock(&watch_lock);
    for (Parked *p = parked_head; p != NULL; p = p->next) {
        uint32_t *word = &p->slot->word;
        int lost = (load_acquire(word) & (SLOT_WOKEN | SLOT_RECHECK)) != 0; /* but asleep */
        if (p->record != NULL) {
            /* Moved by the one rule: the waiter wakes and sees why itself. */
            lost = lost || record_moved(p->arena, p->record, p->generation);
        } else if (p->set != NULL && watch_set_moved(p->arena, p->set, p->wake_when_empty)) {
            fetch_or_release(word, SLOT_RECHECK); /* its driver re-checks its links */
            lost = 1;
        }
        if (lost) futex_wake_all(word);
    }
    local_unlock(&watch_lock);
}

/*
 * The one sleep of a registered slot (no GIL: the caller released it, or
 * never had it).  Returns SLOT_WOKEN's 1 when a set() (or a stop) woke the
 * slot; for a single record, record_moved's 1 or 2 when it moved by the
 * rule; 3 when the watch flagged SLOT_RECHECK; 0 at `deadline` (ns of
 * os_now_ns, < 0: none); -1 on EINTR (the caller handles signals and may
 * call again).  The watcher sleeps RECHECK_NS at a time and runs the round.
 */
int
watch_park(Parked *p, long long deadline)
{
    uint32_t *word = &p->slot->word;
    for (;;) {
        uint32_t seen = load_acquire(word);
        if (seen & SLOT_WOKEN) return 1;
        if (seen & SLOT_RECHECK) return 3;
        /* The watch was handed to us (see the top): taken note of below. */
        if (seen & SLOT_WATCH) fetch_and_release(word, ~SLOT_WATCH);
        if (p->record != NULL) {
            int moved = record_moved(p->arena, p->record, p->generation);
            if (moved) return moved;
        }
        int watching = watch_holds(p);
        long long wait_ns = watching ? RECHECK_NS : -1;
        if (p->record != NULL) TEST_POINT(watching ? "park-watching" : "park-not-watching");
        if (deadline >= 0) {
            long long left = deadline - os_now_ns();
            if (left <= 0) return 0;
            if (wait_ns < 0 || left < wait_ns) wait_ns = left;
        }
        int rc = os_wait_word(word, 0, wait_ns);
        if (rc == EINTR) return -1;
        if (rc == ETIMEDOUT && watching) watch_round();
    }
}

/* --- sets of links: what a lot or a multi-wait waits on -------------------- */

/* 0, or -1 when no memory could be had (nothing changed). */
int
watch_set_add(WatchSet *set, uint32_t link, uint32_t index, uint32_t generation)
{
    local_lock(&set->lock);
    if (set->count == set->capacity) {
        size_t capacity = set->capacity ? 2 * set->capacity : 16;
        Watched *grown = PyMem_RawRealloc(set->items, capacity * sizeof(Watched));
        if (grown == NULL) {
            local_unlock(&set->lock);
            return -1;
        }
        set->items = grown;
        set->capacity = capacity;
    }
    set->items[set->count++] = (Watched){link, index, generation};
    local_unlock(&set->lock);
    return 0;
}

void
watch_set_remove(WatchSet *set, uint32_t link)
{
    local_lock(&set->lock);
    for (size_t i = 0; i < set->count; i++) {
        if (set->items[i].link == link) {
            set->items[i] = set->items[--set->count];
            break;
        }
    }
    local_unlock(&set->lock);
}

/*
 * Watchlist(arena): a parking lot's set of links, in C so that the watch
 * can read it without the GIL (mpevent.shm._parking keeps it beside its own
 * dict; the hub parks with it, a loop's notifier thread too).
 */
static PyObject *
Watchlist_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *arena;
    if (!PyArg_ParseTuple(args, "O:Watchlist", &arena)) return NULL;
    if (arena_argument(arena, "Watchlist()") == NULL) return NULL;
    WatchlistObject *w = (WatchlistObject *)type->tp_alloc(type, 0);
    if (w == NULL) return NULL;
    w->arena = (ArenaObject *)Py_NewRef(arena);
    return (PyObject *)w;
}

/* add(link, index, generation): the link queued on record `index` at `generation`. */
static PyObject *
Watchlist_add(WatchlistObject *w, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "add(link, index, generation) takes 3 arguments");
        return NULL;
    }
    unsigned long link = PyLong_AsUnsignedLong(args[0]);
    unsigned long index = PyLong_AsUnsignedLong(args[1]);
    unsigned long generation = PyLong_AsUnsignedLong(args[2]);
    if (PyErr_Occurred() || check_record(w->arena, index) < 0) return NULL;
    if (watch_set_add(&w->set, (uint32_t)link, (uint32_t)index, (uint32_t)generation) < 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* remove(link): the link left its record (fired or not). */
static PyObject *
Watchlist_remove(WatchlistObject *w, PyObject *arg)
{
    unsigned long link = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    watch_set_remove(&w->set, (uint32_t)link);
    Py_RETURN_NONE;
}

static Py_ssize_t
Watchlist_length(WatchlistObject *w)
{
    local_lock(&w->set.lock);
    Py_ssize_t count = (Py_ssize_t)w->set.count;
    local_unlock(&w->set.lock);
    return count;
}

static void
Watchlist_dealloc(WatchlistObject *w)
{
    PyTypeObject *type = Py_TYPE(w);
    PyMem_RawFree(w->set.items);
    Py_XDECREF(w->arena);
    type->tp_free((PyObject *)w);
    Py_DECREF(type);
}

static PyMethodDef Watchlist_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Watchlist_add, METH_FASTCALL,
     "add(link, index, generation): the watch looks at this link's record."},
    {"remove", (PyCFunction)Watchlist_remove, METH_O, "remove(link): the link left its record."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Watchlist_slots[] = {
    {Py_tp_new, Watchlist_new},
    {Py_tp_dealloc, Watchlist_dealloc},
    {Py_tp_methods, Watchlist_methods},
    {Py_sq_length, Watchlist_length},
    {Py_tp_doc, "Watchlist(arena): the links a parking lot waits on, as the watch reads them."},
    {0, NULL},
};

PyType_Spec WatchlistSpec = {
    .name = "mpevent.shm._native.Watchlist",
    .basicsize = sizeof(WatchlistObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Watchlist_slots,
};

/* --- sleeping, and the waits of a blocking thread -------------------------- */

/*
 * Sleep on a slot's word, registered with the watch (above) as waiting on
 * `record` (a single wait) or on the links of `set` (a lot, a multi-wait),
 * until it is woken, the watch says why it should look, the deadline
 * passes, or a signal needs handling.  Returns watch_park()'s 1 woken, 1
 * or 2 a single record moved by the one rule (2: its claimer died; the
 * caller fails it), 3 a set's record moved (the caller re-checks), 0 timed
 * out, or -1 with an exception (a signal handler raised).
 */
static int
park_slot(ArenaObject *self, Slot *s, Record *record, uint32_t generation, WatchSet *set,
          int wake_when_empty, double timeout)
{
    long long deadline = timeout < 0 ? -1 : os_now_ns() + (long long)(timeout * 1e9);
    Parked parked = {.arena = self, .slot = s, .record = record, .generation = generation,
                     .set = set, .wake_when_empty = wake_when_empty};
    watch_register(&parked);
    int result;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        result = watch_park(&parked, deadline);
        Py_END_ALLOW_THREADS
        if (result != -1) break;
        if (PyErr_CheckSignals() < 0) break;
    }
    watch_unregister(&parked);
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

/*
 * park(slot, timeout, watchlist=None) -> int: sleep until the slot is woken
 * (1), the watch finds a record of the watchlist moved or the watchlist
 * empty (2: the caller re-checks its links; an empty one retires), or the
 * timeout passes (0).  For a parking lot's driver that sleeps on a futex
 * (the hub): mpevent.shm._parking.
 */
PyObject *
Arena_park(ArenaObject *self, PyObject *args)
{
    unsigned long slot;
    PyObject *timeout_arg, *list = Py_None;
    double timeout;
    if (!PyArg_ParseTuple(args, "kO|O:park", &slot, &timeout_arg, &list)) return NULL;
    if (check_slot(self, slot) < 0 || parse_timeout(timeout_arg, &timeout) < 0) return NULL;
    WatchSet *set = NULL;
    if (list != Py_None) {
        if (!PyObject_TypeCheck(list, self->state->watchlist_type)) {
            PyErr_Format(PyExc_TypeError, "park(): a Watchlist, not %.200s", Py_TYPE(list)->tp_name);
            return NULL;
        }
        set = &((WatchlistObject *)list)->set;
    }
    Py_INCREF(list); /* the watch reads its set until we return */
    int woken = park_slot(self, &self->slots[slot], NULL, 0, set, set != NULL, timeout);
    Py_DECREF(list);
    if (woken < 0) return NULL;
    return PyLong_FromLong(woken == 3 ? 2 : woken);
}

/*
 * recheck(index, generation) -> bool: whether the record moved past
 * `generation` by the rule at the top, failing a lost claim: for a waiter
 * that manages its own links (the hub) after a park timed out.
 */
PyObject *
Arena_recheck(ArenaObject *self, PyObject *args)
{
    unsigned long index;
    unsigned int generation;
    if (!PyArg_ParseTuple(args, "kI:recheck", &index, &generation)) return NULL;
    if (check_record(self, index) < 0) return NULL;
    return PyBool_FromLong(record_recheck(self, record_at(self, (uint32_t)index), generation));
}

/* reset(slot): arm the slot's word before queueing it anywhere. */
PyObject *
Arena_reset(ArenaObject *self, PyObject *arg)
{
    unsigned long slot;
    if (parse_slot(self, arg, &slot) < 0) return NULL;
    /* An exchange, not a store: the caller scans its links' fired flags
     * next, and a store followed by a load of another word may be
     * reordered (x86's store buffer does it), so a setter's word = 1 could
     * be overwritten while the scan still reads fired = 0: a lost wakeup.
     * The exchange is ordered with the setter's store on the word itself
     * (src/native/models/wakeup.cpp). */
    exchange_acq_rel(&self->slots[slot].word, 0);
    Py_RETURN_NONE;
}

/* wake(slot): wake a slot from outside any record (e.g. to stop the hub). */
PyObject *
Arena_wake(ArenaObject *self, PyObject *arg)
{
    unsigned long slot;
    if (parse_slot(self, arg, &slot) < 0) return NULL;
    fetch_or_release(&self->slots[slot].word, SLOT_WOKEN);
    futex_wake_all(&self->slots[slot].word);
    Py_RETURN_NONE;
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
    lock_record(self, r);
    uint32_t state = load_acquire(&r->state);
    if (state & STATE_FLAG) {
        unlock_word(self, &r->lock);
        Py_RETURN_TRUE;
    }
    store_relaxed(&s->word, 0);
    enqueue_link(self, r, index, (uint32_t)slot);
    unlock_word(self, &r->lock);

    long long deadline = timeout < 0 ? -1 : os_now_ns() + (long long)(timeout * 1e9);
    int woken;
    for (;;) {
        double left = deadline < 0 ? -1.0 : (double)(deadline - os_now_ns()) / 1e9;
        woken = park_slot(self, s, r, GENERATION(state), NULL, 0,
                          deadline < 0 || left > 0 ? left : 0.0);
        if (woken != 2) break;
        /* Its claimer looked dead: failed under the lock unless a live
         * process claimed it since (then we wait on). */
        record_fail_claim(self, r, CLAIM_DEAD);
        if (GENERATION(load_acquire(&r->state)) != GENERATION(state)) break;
    }
    if (woken == 1 && (load_acquire(&s->word) & SLOT_WOKEN)) {
        Py_RETURN_TRUE; /* a setter dequeued us: nothing left to undo */
    }
    /* Timed out, interrupted, or saw the generation move without being
     * dequeued (its setter died): take our link out ourselves. */
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    lock_record(self, r);
    remove_link(self, r, (uint32_t)slot);
    int fired = GENERATION(load_acquire(&r->state)) != GENERATION(state);
    unlock_word(self, &r->lock);
    if (exc_type != NULL) {
        PyErr_Restore(exc_type, exc_value, exc_tb);
        return NULL;
    }
    return PyBool_FromLong(fired);
}

/* A slot argument: -1 (none yet) or an allocated slot. */
static int
parse_optional_slot(ArenaObject *self, PyObject *arg, long *slot)
{
    *slot = PyLong_AsLong(arg);
    if (*slot == -1) return PyErr_Occurred() ? -1 : 0;
    if (*slot < 0) return check_slot(self, (unsigned long)-1);
    return check_slot(self, (unsigned long)*slot);
}

/*
 * This thread's waiter slot in an arena, as C remembers it: the slot the
 * thread last waited with there (Arena_wait, given it by
 * mpevent.shm._parking, which owns slots and frees them when the thread
 * ends).  Keyed by the arena's instance, never reused, and checked against
 * the arena's table: a slot of another process (a forked child inherits
 * this memory), of an earlier join, or no longer in use is not ours, and
 * the caller takes the Python path, which hands C a slot again.
 */
static __thread struct {
    uint64_t instance;
    long slot;
} cached_slot;

long
thread_slot(ArenaObject *self)
{
    if (cached_slot.instance != self->instance) return -1;
    long slot = cached_slot.slot;
    Slot *s = &self->slots[slot];
    if ((uint64_t)slot >= load_acquire(&self->header->slot_bump) || !load_acquire(&s->in_use) ||
        load_relaxed(&s->owner) != (uint32_t)load_relaxed(&self->held_entry) + 1 ||
        load_relaxed(&s->owner_epoch) != load_relaxed(&self->held_epoch))
        return -1;
    return slot;
}

/*
 * The single-record wait once the timeout is checked: True when the flag
 * is up or a set() happened while waiting, False on timeout, None when it
 * must sleep and `slot` is -1 (the caller allocates one and calls again).
 * timeout < 0: forever.
 */
PyObject *
record_wait(ArenaObject *self, Record *r, long slot, double timeout)
{
    uint32_t state = load_acquire(&r->state);
    if (state & STATE_FLAG) Py_RETURN_TRUE;
    if (slot < 0) {
        /* A result whose claimer is gone fails now, with no slot. */
        if (record_recheck(self, r, GENERATION(state))) Py_RETURN_TRUE;
        Py_RETURN_NONE;
    }
    cached_slot.instance = self->instance;
    cached_slot.slot = slot;
    return wait_record(self, r, (unsigned long)slot, timeout);
}

/*
 * wait(record, slot, timeout) -> bool | None: the whole single-record
 * wait in one call (record_wait).  True when the flag is up on entry or a
 * set() happened while waiting; False on timeout; None when it must sleep
 * and `slot` is -1 (see the contract at the top).  timeout: None (forever)
 * or seconds, checked and found positive by the caller
 * (Linkable._wait_ready).  The slot is remembered for the thread
 * (thread_slot), so Handle.wait can do the next wait in C alone.
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
    if (load_acquire(&r->state) & STATE_FLAG) Py_RETURN_TRUE;
    double timeout;
    long slot;
    if (parse_timeout(args[2], &timeout) < 0 || parse_optional_slot(self, args[1], &slot) < 0)
        return NULL;
    return record_wait(self, r, slot, timeout);
}

/* What wait_any() knows of one record it waits on. */
typedef struct {
    Record *record;
    uint32_t index;
    uint32_t link;
    uint32_t generation; /* when queued */
    int queued;
} Linked;

/* Append a position to `ready` unless it is there already; -1 on error. */
static int
add_ready(PyObject *ready, Py_ssize_t position)
{
    PyObject *item = PyLong_FromSsize_t(position);
    if (item == NULL) return -1;
    int found = PySequence_Contains(ready, item);
    int rc = found < 0 ? -1 : found ? 0 : PyList_Append(ready, item);
    Py_DECREF(item);
    return rc;
}

/*
 * wait_any(records, slot, links, timeout) -> list[int] | None: block until
 * any of `records` (record indices of this arena) is set; the positions
 * seen set, in the order seen, or [] when the timeout passed.  timeout 0
 * only looks.  Records set on entry (or failed now: a lost claim) are
 * answered without a slot; to sleep, `slot` (-1: none yet, then None is
 * returned) is linked to every record: its own link for the first, extra
 * links from the list `links` for the rest (the thread's own, kept for
 * reuse; links taken here are appended to it).  Every link is dequeued
 * before returning, so no later set() writes to the slot.  Never spins.
 */
PyObject *
Arena_wait_any(ArenaObject *self, PyObject *args)
{
    PyObject *records, *slot_arg, *links, *timeout_arg;
    if (!PyArg_ParseTuple(args, "OOO!O:wait_any", &records, &slot_arg, &PyList_Type, &links,
                          &timeout_arg))
        return NULL;
    double timeout;
    long slot;
    if (parse_timeout(timeout_arg, &timeout) < 0 || parse_optional_slot(self, slot_arg, &slot) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(records, "wait_any(): records must be a sequence of indices");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *ready = PyList_New(0);
    Linked *linked = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Linked));
    Py_ssize_t queued = 0;
    Watched *watched = NULL;
    WatchSet set = {0};
    long long deadline = timeout < 0 ? -1 : os_now_ns() + (long long)(timeout * 1e9);
    if (linked == NULL) PyErr_NoMemory(); /* PyMem_Calloc sets no exception */
    if (ready == NULL || linked == NULL) goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long index = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(seq, i));
        if ((index == (unsigned long)-1 && PyErr_Occurred()) || check_record(self, index) < 0)
            goto error;
        linked[i].index = (uint32_t)index;
        linked[i].record = record_at(self, (uint32_t)index);
        uint32_t state = load_acquire(&linked[i].record->state);
        linked[i].generation = GENERATION(state);
        if (((state & STATE_FLAG) || record_recheck(self, linked[i].record, GENERATION(state))) &&
            add_ready(ready, i) < 0)
            goto error;
    }
    if (PyList_GET_SIZE(ready) > 0 || n == 0 || timeout == 0.0) goto done;
    if (slot < 0) {
        Py_CLEAR(ready);
        ready = Py_NewRef(Py_None);
        goto done;
    }
    /* Links: the slot's own for the first record, extras for the rest. */
    linked[0].link = (uint32_t)slot;
    for (Py_ssize_t i = 1; i < n; i++) {
        if (i - 1 >= PyList_GET_SIZE(links)) {
            uint32_t link;
            if (link_take(self, (uint32_t)slot, &link) < 0) goto error;
            if (append_new(links, PyLong_FromUnsignedLong(link)) < 0) goto error;
        }
        unsigned long link = PyLong_AsUnsignedLong(PyList_GET_ITEM(links, i - 1));
        if (link == (unsigned long)-1 && PyErr_Occurred()) goto error;
        linked[i].link = (uint32_t)link;
    }
    Slot *s = &self->slots[slot];
    store_release(&s->word, 0);
    for (; queued < n; queued++) {
        Linked *l = &linked[queued];
        lock_record(self, l->record);
        uint32_t state = load_acquire(&l->record->state);
        if (!(state & STATE_FLAG)) {
            enqueue_link(self, l->record, l->index, l->link);
            l->queued = 1;
        }
        unlock_word(self, &l->record->lock);
        if (state & STATE_FLAG) { /* set already: nothing was queued */
            if (add_ready(ready, queued) < 0) goto error;
            queued++;
            break;
        }
        l->generation = GENERATION(state);
    }
    /* What the watch looks at for us: every link queued. */
    if (PyList_GET_SIZE(ready) == 0) {
        watched = PyMem_RawMalloc((size_t)(queued ? queued : 1) * sizeof(Watched));
        if (watched == NULL) {
            PyErr_NoMemory();
            goto error;
        }
        for (Py_ssize_t i = 0; i < queued; i++)
            if (linked[i].queued)
                watched[set.count++] =
                    (Watched){linked[i].link, linked[i].index, linked[i].generation};
        set.items = watched;
        set.capacity = set.count;
    }
    while (PyList_GET_SIZE(ready) == 0) {
        double left = timeout < 0 ? -1.0 : (double)(deadline - os_now_ns()) / 1e9;
        if (timeout >= 0 && left <= 0) break;
        int woken = park_slot(self, s, NULL, 0, &set, 0, left);
        if (woken < 0) goto error;
        if (woken != 3) break; /* woken (links fired: looked at below) or timed out */
        /* The watch saw a record move with no wakeup (a dead setter or
         * claimer): the one rule, applied here, fails a lost claim. */
        fetch_and_release(&s->word, ~SLOT_RECHECK);
        for (Py_ssize_t i = 0; i < queued; i++) {
            if (linked[i].queued && record_recheck(self, linked[i].record, linked[i].generation) &&
                add_ready(ready, i) < 0)
                goto error;
        }
    }
    goto done;
error:
    Py_CLEAR(ready);
done:
    /* Dequeue everything so no later set() writes to this slot; a link that
     * fired meanwhile reports it, in queueing order. */
    if (linked != NULL) {
        PyObject *exc_type, *exc_value, *exc_tb;
        PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
        for (Py_ssize_t i = 0; i < queued; i++) {
            Linked *l = &linked[i];
            if (!l->queued) continue;
            lock_record(self, l->record);
            remove_link(self, l->record, l->link);
            int fired = load_acquire(&self->links[l->link].fired);
            unlock_word(self, &l->record->lock);
            if (fired && ready != NULL && ready != Py_None && add_ready(ready, i) < 0)
                Py_CLEAR(ready); /* the error stands; the other links still come out */
        }
        if (exc_type != NULL) {
            PyErr_Restore(exc_type, exc_value, exc_tb);
            Py_CLEAR(ready);
        }
        PyMem_Free(linked);
    }
    PyMem_RawFree(watched);
    Py_DECREF(seq);
    return ready;
}
