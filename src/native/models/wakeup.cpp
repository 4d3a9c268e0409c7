/*
 * Relacy model: publish, park and wake -- an event loop's reset-then-scan
 * against a setter and the notifier's exchange; and the single-record wait.
 *
 * Mirrors (src/native/waiters.c) wake_fired, wake_slots, enqueue_link,
 * remove_link, Arena_fired_among and Arena_dequeue; (src/native/wait.c)
 * Arena_reset, wait_record and park_slot; (src/native/records.c)
 * record_set and publish_unlock; (src/native/notify.c) notifier_run.
 *
 * Suite 1, the loop (threads: setter, loop, notifier).  The loop has one
 * link queued on a record; the link names the loop's slot, whose word the
 * notifier thread sleeps on.
 *   - setter, wake_fired under the record lock, for the dequeued link:
 *     read the link's slot index FIRST (into a local), then clear
 *     LINK_QUEUED (release), store fired = 1 (release), then the slot's
 *     word = SLOT_WOKEN (release); after unlocking, wake_slots: a futex
 *     wake of the word.
 *   - loop: Arena_reset arms its slot's word -- an exchange with 0,
 *     acq_rel -- then Arena_fired_among scans the link's fired flag
 *     (acquire).  Found: Arena_dequeue's lock-free path (not queued, fired)
 *     returns and the link may be queued again elsewhere at once, which
 *     writes its slot index (a plain store, modelled as an rl::var).  Not
 *     found: it sleeps until the eventfd is readable, reads it, resets and
 *     scans again (and must find the link fired now).
 *   - notifier, notifier_run: while the word is 0, futex-sleep on it; then
 *     exchange it with 0 (acq_rel): 0 read is a spurious return (no eventfd
 *     write), anything else is a wakeup: it writes the eventfd.
 * Promise: if the setter fired, the loop sees fired in its scan or gets an
 * eventfd -- no lost wakeup.  A lost one leaves the loop asleep on the
 * eventfd and the notifier asleep on a word of 0 after the setter is done:
 * Relacy reports a DEADLOCK.  Also: the loop's second scan finds the link
 * fired (asserted), and the setter's read of the link's slot index never
 * races with the link's reuse (a DATA RACE otherwise).
 * Not modelled: the notifier's RECHECK_NS tick, which would find the moved
 * record a second later (it is there for dead setters; a live setter's
 * wakeup must not wait for it), the datagram path of wake_slots, and the
 * notifier's stop: when the loop is done, the model lets the notifier go
 * through a model-only flag that its futex wait looks at in the same step
 * as the value (the notifier is a daemon, not a thread asleep forever).
 *
 * Suite 2, the wait (threads: waiter, setter): the single-record wait.
 *   - waiter, wait_record: under the record lock (an rl::mutex here; the
 *     arena's lock word is modelled in lock_word.cpp) read the state with
 *     the flag down, store its slot word 0, queue its link (enqueue_link),
 *     unlock; then park_slot: read the word (acquire): SLOT_WOKEN set ->
 *     woken; SLOT_WATCH set -> clear it; the record's generation moved ->
 *     done; else futex-wait while the word is 0, with no timeout (this
 *     waiter is not the watcher: the watch is for dead setters, modelled
 *     in watch.cpp).  If not woken by its setter it takes its link out
 *     under the lock (remove_link) and reports whether the generation moved.
 *   - setter, record_set and publish_unlock: under the lock, publish the
 *     state (new generation and STATE_FLAG, release), then wake_fired
 *     (dequeue, fired, word = SLOT_WOKEN); futex wake after unlocking.
 * Promise: the waiter never sleeps forever once the setter ran (a DEADLOCK
 * otherwise), and it reports the record set (after() asserts).
 *
 * Futex: the model's os_wait_word and futex_wake_all are Relacy's own park
 * and unpark on the atomic: the value check and the park are one step (the
 * kernel's hash-bucket lock), with a seq_cst fence before the check and
 * before the wake (the kernel's full barrier); no spurious returns.  Every
 * sleep here is untimed, so a sleep that nobody ends is a DEADLOCK.
 *
 * MODEL_OLD: Arena_reset arms the word with a release store of 0 instead of
 * the exchange (suite 1; suite 2 is unchanged).  A store followed by a load
 * of another word may be reordered: the loop's 0 can land after the
 * setter's SLOT_WOKEN while its scan still reads fired = 0.
 * (MODEL_OLD_SLOT, not run by CI: wake_fired reads the link's slot index
 * after storing fired, as before the fix; suite 1 then finds a DATA RACE
 * with the loop's reuse of the link.)
 *
 * Under -DMODEL_OLD this model fails: the setter stores fired = 1 and the
 * word = SLOT_WOKEN and wakes (nobody asleep yet); the loop's reset stores
 * 0 after the setter's SLOT_WOKEN in the word's order, yet its scan reads
 * fired = 0 (the store-then-load reordering); the loop sleeps on the
 * eventfd, the notifier finds the word 0 and sleeps on it -- Relacy reports
 * DEADLOCK in suite 1 (the first run).
 *
 * Build: g++ -std=c++11 -O1 -o m wakeup.cpp && ./m             (exit 0)
 *        g++ -std=c++11 -O1 -DMODEL_OLD -o m wakeup.cpp && ./m  (exit 1)
 */
#include <relacy/relacy.hpp>

static const unsigned SLOT_WOKEN = 1u;
static const unsigned SLOT_WATCH = 2u;
static const unsigned LINK_QUEUED = 1u;
static const unsigned STATE_FLAG = 1u;
static const unsigned LOOP_SLOT = 0u;  /* the slot the link names */
static const unsigned OTHER_SLOT = 7u; /* what a reuse of the link writes */

static unsigned generation(unsigned state) { return state >> 1; }

/* futex wait, untimed: the value check and the park in one step.  `done`
 * (suite 1's notifier only) is a model device, not the C's: the model's
 * end, looked at in that same step, so a thread that must outlive the
 * model (the notifier, a daemon) is not taken for one asleep forever. */
static void os_wait_word(rl::atomic<unsigned>& w, unsigned expected, rl::atomic<unsigned>* done = 0)
{
    rl::context& c = rl::ctx();
    c.sched();
    c.atomic_thread_fence_seq_cst();
    unsigned now;
    {
        rl::preemption_disabler off(c);
        now = w.load(rl::mo_acquire, $);
        if (done != 0 && done->load(rl::mo_seq_cst, $)) return;
    }
    if (now != expected) return; /* EAGAIN */
    w.wait(c, false, false, $);
}

static void futex_wake_all(rl::atomic<unsigned>& w)
{
    rl::context& c = rl::ctx();
    c.sched();
    c.atomic_thread_fence_seq_cst();
    w.wake(c, 16, $);
}

/* --- suite 1: setter, event loop, notifier ------------------------------- */

struct loop_model : rl::test_suite<loop_model, 3> {
    rl::atomic<unsigned> word;       /* the loop's slot word */
    rl::atomic<unsigned> efd;        /* the eventfd's count */
    rl::atomic<unsigned> done;       /* the model's end (not the C's stop) */
    rl::atomic<unsigned> link_flags; /* LINK_QUEUED */
    rl::atomic<unsigned> link_fired;
    rl::var<unsigned> link_slot;     /* the link's slot index: a plain field */
    rl::atomic<int> loop_saw_fired;

    void before()
    {
        word($).store(0, rl::mo_relaxed);
        efd($).store(0, rl::mo_relaxed);
        done($).store(0, rl::mo_relaxed);
        link_flags($).store(LINK_QUEUED, rl::mo_relaxed);
        link_fired($).store(0, rl::mo_relaxed);
        link_slot($) = LOOP_SLOT;
        loop_saw_fired($).store(0, rl::mo_relaxed);
    }

    void after()
    {
        RL_ASSERT(loop_saw_fired($).load(rl::mo_relaxed) == 1);
    }

    /* wake_fired for the one queued link, then wake_slots after unlocking */
    void setter()
    {
#ifndef MODEL_OLD_SLOT
        unsigned slot = link_slot($); /* first: the link may be reused once fired */
#endif
        link_flags($).fetch_and(~LINK_QUEUED, rl::mo_release);
        link_fired($).store(1, rl::mo_release);
#ifdef MODEL_OLD_SLOT
        unsigned slot = link_slot($);
#endif
        RL_ASSERT(slot == LOOP_SLOT);
        word($).store(SLOT_WOKEN, rl::mo_release);
        /* (record lock released here) */
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

    void loop()
    {
        arena_reset();
        bool found = fired_among();
        if (!found) {
            /* asleep in epoll until the eventfd is readable */
            while (efd($).load(rl::mo_acquire) == 0) os_wait_word(efd, 0);
            efd($).exchange(0, rl::mo_acq_rel); /* read it */
            arena_reset();
            found = fired_among();
            RL_ASSERT(found); /* an eventfd here means the setter's word */
        }
        loop_saw_fired($).store(1, rl::mo_relaxed);
        /* Arena_dequeue's lock-free path, then the link is queued again */
        if (!(link_flags($).load(rl::mo_acquire) & LINK_QUEUED) &&
            link_fired($).load(rl::mo_acquire))
            link_slot($) = OTHER_SLOT;
        /* the model ends: the notifier is let go (see os_wait_word) */
        done($).store(1, rl::mo_seq_cst);
        futex_wake_all(word);
    }

    /* notifier_run, without the RECHECK_NS tick and the stop */
    void notifier()
    {
        while (!done($).load(rl::mo_seq_cst)) {
            if (word($).load(rl::mo_acquire) == 0) os_wait_word(word, 0, &done);
            if (done($).load(rl::mo_seq_cst)) break;
            if (word($).exchange(0, rl::mo_acq_rel) == 0) continue; /* spurious */
            efd($).fetch_add(1, rl::mo_release); /* os_notify_fd */
            futex_wake_all(efd);
        }
    }

    void thread(unsigned i)
    {
        if (i == 0) setter();
        else if (i == 1) loop();
        else notifier();
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
            word($).store(SLOT_WOKEN, rl::mo_release);
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
    rl::test_params p1;
    p1.search_type = rl::sched_bound;
    p1.context_bound = 3;
    bool ok1 = rl::simulate<loop_model>(p1);

    rl::test_params p2;
    p2.search_type = rl::sched_bound;
    p2.context_bound = 3;
    bool ok2 = rl::simulate<wait_model>(p2);

    return ok1 && ok2 ? 0 : 1;
}
