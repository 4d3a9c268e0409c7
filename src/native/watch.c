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

#include "arena.h"

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
    store_relaxed(&watch_lock, 0);
    parked_head = NULL;
    watcher = NULL;
}

void
watch_init(void)
{
    spin_init();
    note_lock_fault(pthread_atfork(watch_prepare_fork, watch_after_fork_parent, watch_after_fork_child));
}

void
watch_register(Parked *p)
{
    local_lock(&watch_lock);
    p->prev = NULL;
    p->next = parked_head;
    if (parked_head != NULL) parked_head->prev = p;
    parked_head = p;
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
        watcher = NULL;
        /* Hand the watch over: the woken thread finds it free and takes it. */
        if (parked_head != NULL) futex_wake_all(&parked_head->slot->word);
    }
    local_unlock(&watch_lock);
}

/* Take the watch if nobody holds it; returns whether `p` holds it. */
int
watch_claim(Parked *p)
{
    local_lock(&watch_lock);
    if (watcher == NULL) watcher = p;
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
         * (wait.c): the waiter wakes and sees why itself. */
        if (load_acquire(&p->slot->word) != 0 ||
            record_moved(p->arena, p->record, p->generation))
            futex_wake_all(&p->slot->word);
    }
    local_unlock(&watch_lock);
}

