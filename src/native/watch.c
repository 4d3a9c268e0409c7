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
 * still 0, or whose word says SLOT_WOKEN while it still sleeps, lost its wakeup, and
 * gets a futex wake (the word is left alone: the waiter sees the moved
 * generation and takes its link out itself, taking the dead setter's lock
 * over and finishing its wakeups for everyone).  So an idle process wakes
 * about once a second in all, however many threads wait, and no extra
 * thread exists (one would make every later fork warn on 3.12+).
 *
 * The hand-over, and why it is a bit in the sleeper's word: the watch is
 * never taken, it is given, under the watch lock.  The first waiter to
 * register gets it (watch_register); a watcher that leaves gives it to the
 * new head of the list (watch_unregister), so the list is never without a
 * watcher while anyone is on it.  Its new holder may be anywhere between
 * asking whether it watches (watch_holds, "no") and its untimed futex
 * wait, so a bare futex wake could come before the wait and be lost; the
 * giver therefore ORs SLOT_WATCH into the holder's word first.  The futex
 * wait compares the word with 0, so it returns at once, and park_slot
 * (wait.c) clears the bit and asks again: "yes", a timed sleep.
 */

#include "arena.h"

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

/* The watcher's round: wake every registered waiter that lost its wakeup. */
void
watch_round(void)
{
    local_lock(&watch_lock);
    for (Parked *p = parked_head; p != NULL; p = p->next) {
        /* Woken but still asleep, or its record moved by the one rule
         * (claims.c): the waiter wakes and sees why itself. */
        if ((load_acquire(&p->slot->word) & SLOT_WOKEN) ||
            record_moved(p->arena, p->record, p->generation))
            futex_wake_all(&p->slot->word);
    }
    local_unlock(&watch_lock);
}

