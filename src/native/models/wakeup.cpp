/*
 * Relacy model: publish, park and wake -- an event loop's reset-then-scan
 * against a setter and the notifier's exchange; the notifier's stop; and
 * the single-record wait.
 *
 * Mirrors (src/native/waiters.c) wake_fired, wake_slots, enqueue_link,
 * remove_link, Arena_fired_among and Arena_dequeue; (src/native/wait.c)
 * Arena_reset, Arena_wake, wait_record and park_slot; (src/native/records.c)
 * record_set and publish_unlock; (src/native/notify.c) notifier_run and
 * notifier_stop.
 *
 * A setter's write of a slot word (wake_fired, Arena_wake) is an OR,
 * release: a read-modify-write, so it continues the release sequence of
 * whoever wrote the word before it (set_woken below).
 *
 * Suite 1, the loop (threads: setter, loop, notifier).  The loop has one
 * link queued on a record; the link names the loop's slot, whose word the
 * notifier thread sleeps on.  The record lock is an rl::mutex (the arena's
 * lock word is modelled in lock_word.cpp).
 *   - setter, wake_fired under the record lock, for the dequeued link:
 *     read the link's slot index FIRST (into a local), then clear
 *     LINK_QUEUED (release), store fired = 1 (release), then OR SLOT_WOKEN
 *     into the slot's word (release); after unlocking, wake_slots: a futex
 *     wake of the word.
 *   - loop: Arena_reset arms its slot's word -- an exchange with 0,
 *     acq_rel -- then Arena_fired_among scans the link's fired flag
 *     (acquire).  Not found: it sleeps until the eventfd is readable, reads
 *     it, resets and scans again (and must find the link fired now).
 *     Found: Arena_dequeue retires the link -- always under the record
 *     lock, remove_link and the fired read (asserted 1) -- and then the
 *     link and the slot may be reused at once: the link's slot index is
 *     written (a plain field, an rl::var), and so is a model-only plain
 *     mark of the slot's next tenure.  Last, the loop closes its notifier
 *     (notifier_stop, as in suite 3) and waits for it to exit.
 *   - notifier, notifier_run: while stop is 0 (acquire): while the word is
 *     0, futex-sleep on it; stop seen -> exit; exchange the word with 0
 *     (acq_rel): 0 read is a spurious return (no eventfd write), anything
 *     else is a wakeup: it writes the eventfd.  On exit: exited = 1, wake.
 * Promise: if the setter fired, the loop sees fired in its scan or gets an
 * eventfd -- no lost wakeup.  A lost one leaves the loop asleep on the
 * eventfd and the notifier asleep on a word of 0 after the setter is done:
 * Relacy reports a DEADLOCK.  Also: the loop's second scan finds the link
 * fired (asserted), and nothing the setter does to the link or the slot
 * comes after the retire: its read of the link's slot index and its word
 * write (where it reads the tenure mark) are ordered before the reuse (a
 * DATA RACE otherwise).
 *
 * Suite 3, the stop (threads: setter, stopper, notifier).
 *   - setter: OR SLOT_WOKEN into the word (release), futex wake
 *     (wake_fired and wake_slots, or Arena_wake).
 *   - stopper, notifier_stop: stop = 1 (release), OR SLOT_WOKEN into the
 *     word (release), futex wake; then sleep until exited.
 *   - notifier: notifier_run, as in suite 1.
 * Promise: once both stop and the setter have run, the notifier sees stop
 * and exits -- no lost stop (a DEADLOCK otherwise; after() asserts exited).
 * It holds because the setter's OR, when it lands after the stopper's in
 * the word's order, continues the release sequence headed by the
 * stopper's: the notifier's exchange that reads it synchronizes with the
 * stopper, and its next look at stop sees 1.
 *
 * Not modelled: the notifier's RECHECK_NS tick (its sleep is untimed here:
 * this Relacy crashes with two timed parks on one atomic, and a tick
 * would hide a lost wakeup or stop as a delay of a second; it is there for
 * dead setters, and a live setter's wakeup must not wait for it), and the
 * datagram path of wake_slots.
 *
 * Suite 2, the wait (threads: waiter, setter): the single-record wait.
 *   - waiter, wait_record: under the record lock (an rl::mutex) read the
 *     state with the flag down, store its slot word 0, queue its link
 *     (enqueue_link), unlock; then park_slot: read the word (acquire):
 *     SLOT_WOKEN set -> woken; SLOT_WATCH set -> clear it; the record's
 *     generation moved -> done; else futex-wait while the word is 0, with
 *     no timeout (this waiter is not the watcher: the watch is for dead
 *     setters, modelled in watch.cpp).  If not woken by its setter it takes
 *     its link out under the lock (remove_link) and reports whether the
 *     generation moved.
 *   - setter, record_set and publish_unlock: under the lock, publish the
 *     state (new generation and STATE_FLAG, release), then wake_fired
 *     (dequeue, fired, OR SLOT_WOKEN into the word); futex wake after
 *     unlocking.
 * Promise: the waiter never sleeps forever once the setter ran (a DEADLOCK
 * otherwise), and it reports the record set (after() asserts).
 *
 * Futex (futex.hpp): every sleep here is untimed, so a sleep that nobody
 * ends is a DEADLOCK.
 *
 * MODEL_OLD: Arena_reset arms the word with a release store of 0 instead of
 * the exchange (suite 1; suites 2 and 3 are unchanged).  A store followed
 * by a load of another word may be reordered: the loop's 0 can land after
 * the setter's SLOT_WOKEN while its scan still reads fired = 0.
 *
 * Under -DMODEL_OLD this model fails: the setter stores fired = 1, ORs
 * SLOT_WOKEN into the word and wakes (nobody asleep yet); the loop's reset
 * stores 0 after the setter's SLOT_WOKEN in the word's order, yet its scan
 * reads fired = 0 (the store-then-load reordering); the loop sleeps on the
 * eventfd, the notifier finds the word 0 and sleeps on it -- Relacy reports
 * DEADLOCK in suite 1 (the first run).
 *
 * Switches not run by CI (each makes the model exit 1):
 * MODEL_OLD_STOP: the setter writes the word with a plain release store,
 * as wake_fired did before.  Suite 3 fails, DEADLOCK, a lost stop: the
 * stopper stores stop = 1 and ORs the word; the setter's store lands after
 * that OR and cuts the stopper's release sequence; the notifier reads the
 * setter's value, reads stop = 0 (a stale value: nothing orders it after
 * the stopper), exchanges the word to 0, writes the eventfd, reads stop =
 * 0 again and sleeps on a word of 0 whose last wake is gone; the stopper
 * sleeps on exited.  (Suite 1 holds: there the record lock orders the
 * setter's word write before the loop's stop.)
 * MODEL_OLD_SLOT: wake_fired reads the link's slot index after storing
 * fired, and Arena_dequeue has its old lock-free path (a link not queued
 * and fired is retired without the lock).  Suite 1 fails, DATA RACE: the
 * loop retires the link without the lock and reuses the slot while the
 * setter's word write is not ordered before that reuse.  (The lock-free
 * path alone fails the same way; the late slot read alone, under the
 * lock, holds.)
 *
 * Build: g++ -std=c++11 -O1 -o m wakeup.cpp && ./m             (exit 0)
 *        g++ -std=c++11 -O1 -DMODEL_OLD -o m wakeup.cpp && ./m  (exit 1)
 */
#include <relacy/relacy.hpp>

#include "futex.hpp"

static const unsigned SLOT_WOKEN = 1u;
static const unsigned SLOT_WATCH = 2u;
static const unsigned LINK_QUEUED = 1u;
static const unsigned STATE_FLAG = 1u;
static const unsigned LOOP_SLOT = 0u;  /* the slot the link names */
static const unsigned OTHER_SLOT = 7u; /* what a reuse of the link writes */

static unsigned generation(unsigned state) { return state >> 1; }

/* A setter's write of SLOT_WOKEN into a slot word (wake_fired, Arena_wake):
 * an OR, release; under MODEL_OLD_STOP the plain release store it was. */
static void set_woken(rl::atomic<unsigned>& word)
{
#ifndef MODEL_OLD_STOP
    word.fetch_or(SLOT_WOKEN, rl::mo_release, $);
#else
    word.store(SLOT_WOKEN, rl::mo_release, $);
#endif
}

/* The notifier's thread and its stop, shared by suites 1 and 3. */
struct notifier_state {
    rl::atomic<unsigned> stop;
    rl::atomic<unsigned> exited;
    rl::atomic<unsigned> efd; /* the eventfd's count */

    void init()
    {
        stop($).store(0, rl::mo_relaxed);
        exited($).store(0, rl::mo_relaxed);
        efd($).store(0, rl::mo_relaxed);
    }

    /* notifier_run, without the RECHECK_NS tick (its sleep is untimed) */
    void run(rl::atomic<unsigned>& word)
    {
        while (!stop($).load(rl::mo_acquire)) {
            if (word.load(rl::mo_acquire, $) == 0) os_wait_word(word, 0);
            if (stop($).load(rl::mo_acquire)) break;
            if (word.exchange(0, rl::mo_acq_rel, $) == 0) continue; /* spurious */
            efd($).fetch_add(1, rl::mo_release); /* os_notify_fd */
            futex_wake_all(efd);
        }
        exited($).store(1, rl::mo_release);
        futex_wake_all(exited);
    }

    /* notifier_stop: raise stop, OR the word, wake it, wait for exited */
    void close(rl::atomic<unsigned>& word)
    {
        stop($).store(1, rl::mo_release);
        word.fetch_or(SLOT_WOKEN, rl::mo_release, $);
        futex_wake_all(word);
        while (!exited($).load(rl::mo_acquire)) os_wait_word(exited, 0);
    }
};

/* --- suite 1: setter, event loop, notifier ------------------------------- */

struct loop_model : rl::test_suite<loop_model, 3> {
    rl::mutex record_lock;
    rl::atomic<unsigned> word;       /* the loop's slot word */
    notifier_state n;
    rl::atomic<unsigned> link_flags; /* LINK_QUEUED */
    rl::atomic<unsigned> link_fired;
    rl::var<unsigned> link_slot;     /* the link's slot index: a plain field */
    rl::var<unsigned> slot_reused;   /* model-only: the slot's next tenure began */
    rl::atomic<int> loop_saw_fired;

    void before()
    {
        word($).store(0, rl::mo_relaxed);
        n.init();
        link_flags($).store(LINK_QUEUED, rl::mo_relaxed);
        link_fired($).store(0, rl::mo_relaxed);
        link_slot($) = LOOP_SLOT;
        slot_reused($) = 0;
        loop_saw_fired($).store(0, rl::mo_relaxed);
    }

    void after()
    {
        RL_ASSERT(loop_saw_fired($).load(rl::mo_relaxed) == 1);
        RL_ASSERT(n.exited($).load(rl::mo_relaxed) == 1);
    }

    /* wake_fired for the one queued link under the record lock, then
     * wake_slots after unlocking */
    void setter()
    {
        record_lock.lock($);
#ifndef MODEL_OLD_SLOT
        unsigned slot = link_slot($); /* first, before fired is published */
#endif
        link_flags($).fetch_and(~LINK_QUEUED, rl::mo_release);
        link_fired($).store(1, rl::mo_release);
#ifdef MODEL_OLD_SLOT
        unsigned slot = link_slot($);
#endif
        RL_ASSERT(slot == LOOP_SLOT);
        set_woken(word);
        /* the write above is to the link's tenure of the slot: a plain read
         * of the model-only tenure mark, so a word write not ordered before
         * the slot's reuse is a DATA RACE (and a read of 1 an assertion) */
        RL_ASSERT(slot_reused($) == 0);
        record_lock.unlock($);
        futex_wake_all(word);
    }

    void arena_reset()
    {
#ifndef MODEL_OLD
        word($).exchange(0, rl::mo_acq_rel);
#else
        word($).store(0, rl::mo_release);
#endif
    }

    bool fired_among() { return link_fired($).load(rl::mo_acquire) != 0; }

    /* Arena_dequeue: remove_link and the fired read, under the record lock */
    bool dequeue()
    {
#ifdef MODEL_OLD_SLOT
        /* the old lock-free path: not queued and fired, retired at once */
        if (!(link_flags($).load(rl::mo_acquire) & LINK_QUEUED) &&
            link_fired($).load(rl::mo_acquire))
            return true;
#endif
        record_lock.lock($);
        if (link_flags($).load(rl::mo_acquire) & LINK_QUEUED)
            link_flags($).fetch_and(~LINK_QUEUED, rl::mo_release);
        bool fired = link_fired($).load(rl::mo_relaxed) != 0;
        record_lock.unlock($);
        return fired;
    }

    void loop()
    {
        arena_reset();
        bool found = fired_among();
        if (!found) {
            /* asleep in epoll until the eventfd is readable */
            while (n.efd($).load(rl::mo_acquire) == 0) os_wait_word(n.efd, 0);
            n.efd($).exchange(0, rl::mo_acq_rel); /* read it */
            arena_reset();
            found = fired_among();
            RL_ASSERT(found); /* an eventfd here means the setter's word */
        }
        loop_saw_fired($).store(1, rl::mo_relaxed);
        RL_ASSERT(dequeue());
        /* retired: the link and the slot are reused at once */
        link_slot($) = OTHER_SLOT;
        slot_reused($) = 1;
        /* the loop is done: it closes its notifier */
        n.close(word);
    }

    void thread(unsigned i)
    {
        if (i == 0) setter();
        else if (i == 1) loop();
        else n.run(word);
    }
};

/* --- suite 3: the notifier's stop against a setter ----------------------- */

struct stop_model : rl::test_suite<stop_model, 3> {
    rl::atomic<unsigned> word; /* the loop's slot word */
    notifier_state n;

    void before()
    {
        word($).store(0, rl::mo_relaxed);
        n.init();
    }

    void after() { RL_ASSERT(n.exited($).load(rl::mo_relaxed) == 1); }

    void thread(unsigned i)
    {
        if (i == 0) {
            set_woken(word); /* wake_fired (or Arena_wake) */
            futex_wake_all(word);
        } else if (i == 1) {
            n.close(word);
        } else {
            n.run(word);
        }
    }
};

/* --- suite 2: the single-record wait ------------------------------------- */

struct wait_model : rl::test_suite<wait_model, 2> {
    rl::mutex record_lock;
    rl::atomic<unsigned> state;   /* generation << 1 | STATE_FLAG */
    rl::atomic<unsigned> waiters; /* the list head: link + 1, or 0 */
    rl::atomic<unsigned> link_flags;
    rl::atomic<unsigned> link_fired;
    rl::var<unsigned> link_slot;
    rl::atomic<unsigned> word;    /* the waiter's slot word */
    rl::atomic<int> result;       /* what wait_record returned: 1 set, 0 not */

    void before()
    {
        state($).store(4u << 1, rl::mo_relaxed); /* generation 4, flag down */
        waiters($).store(0, rl::mo_relaxed);
        link_flags($).store(0, rl::mo_relaxed);
        link_fired($).store(0, rl::mo_relaxed);
        link_slot($) = 0;
        word($).store(SLOT_WOKEN, rl::mo_relaxed); /* from an earlier wait */
        result($).store(-1, rl::mo_relaxed);
    }

    void after()
    {
        RL_ASSERT(result($).load(rl::mo_relaxed) == 1);
    }

    /* wait_record, its park_slot untimed (not the watcher) */
    int wait_record()
    {
        if (state($).load(rl::mo_acquire) & STATE_FLAG) return 1;
        record_lock.lock($);
        unsigned st = state($).load(rl::mo_acquire);
        if (st & STATE_FLAG) {
            record_lock.unlock($);
            return 1;
        }
        word($).store(0, rl::mo_relaxed);
        /* enqueue_link */
        link_slot($) = 0;
        link_fired($).store(0, rl::mo_relaxed);
        link_flags($).store(LINK_QUEUED, rl::mo_release);
        waiters($).store(1, rl::mo_release);
        record_lock.unlock($);

        /* park_slot */
        int woken;
        for (;;) {
            unsigned w = word($).load(rl::mo_acquire);
            if (w & SLOT_WOKEN) {
                woken = 1;
                break;
            }
            if (w & SLOT_WATCH) word($).fetch_and(~SLOT_WATCH, rl::mo_release);
            if (generation(state($).load(rl::mo_acquire)) != generation(st)) {
                woken = 1; /* record_moved */
                break;
            }
            os_wait_word(word, 0);
        }
        if (woken == 1 && (word($).load(rl::mo_acquire) & SLOT_WOKEN)) return 1;
        /* not dequeued by a setter: take the link out ourselves */
        record_lock.lock($);
        if (link_flags($).load(rl::mo_acquire) & LINK_QUEUED) { /* remove_link */
            waiters($).store(0, rl::mo_release);
            link_flags($).fetch_and(~LINK_QUEUED, rl::mo_release);
        }
        int fired = generation(state($).load(rl::mo_acquire)) != generation(st);
        record_lock.unlock($);
        return fired;
    }

    /* record_set: publish_unlock, wake_fired, then wake_slots */
    void record_set()
    {
        if (state($).load(rl::mo_acquire) & STATE_FLAG) return;
        record_lock.lock($);
        unsigned st = state($).load(rl::mo_acquire);
        if (st & STATE_FLAG) {
            record_lock.unlock($);
            return;
        }
        state($).store(((generation(st) + 1) << 1) | STATE_FLAG, rl::mo_release);
        unsigned next = waiters($).load(rl::mo_relaxed);
        waiters($).store(0, rl::mo_release);
        bool wake = false;
        if (next != 0) {
            unsigned slot = link_slot($);
            link_flags($).fetch_and(~LINK_QUEUED, rl::mo_release);
            link_fired($).store(1, rl::mo_release);
            RL_ASSERT(slot == 0);
            set_woken(word);
            wake = true;
        }
        record_lock.unlock($);
        if (wake) futex_wake_all(word);
    }

    void thread(unsigned i)
    {
        if (i == 0) result($).store(wait_record(), rl::mo_relaxed);
        else record_set();
    }
};

int main()
{
    int status = run_model<loop_model>("wakeup, suite 1 (loop)");
    status |= run_model<wait_model>("wakeup, suite 2 (wait)");
    status |= run_model<stop_model>("wakeup, suite 3 (stop)");
    return status;
}
