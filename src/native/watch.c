/*
 * The watch: one per process, over every parked slot, for the wakeups that
 * never came.
 *
 * A setter that dies after publishing a new generation but before waking
 * everyone, or a claimer that dies unset, leaves waiters asleep.  Rather
 * than each sleeper re-reading its records on a timer (one wakeup a second
 * per waiting thread, hub and event loop), every slot that parks registers
 * what it waits on here -- one record (a single wait), or a set of links
 * (a multi-wait, the hub's or a loop's parking lot: mpevent.shm._lot) --
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
int
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

/* The watcher's round: wake every registered sleeper that lost its wakeup. */
void
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
 * can read it without the GIL (mpevent.shm._lot keeps it beside its own
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
