/*
 * Relacy model: taking an extra link against reclaiming a dead slot.
 *
 * Mirrors, in src/native/slots.c: link_take, link_give_back, slot_give_back,
 * Arena_slot_reclaim, Arena_slot_alloc; in src/native/waiters.c:
 * enqueue_link and remove_link.
 *
 * The protocol (FIX).  Slot i owns link i; extra links (index >= the slot
 * capacity) carry the slot they belong to and LINK_OWNED.
 *   - A link's `slot` and its LINK_OWNED flag are written only under the
 *     arena lock: link_take (pop the free list; clear next, record, fired;
 *     slot, relaxed; then flags = OWNED, release) and Arena_slot_alloc (the
 *     slot's own link).  enqueue_link, under the record lock, no longer
 *     writes `slot`: it writes record, fired, flags (OWNED kept | QUEUED,
 *     release), next, and the list head.
 *   - Arena_slot_reclaim(D): under the arena lock, takes the slot (owner
 *     cleared) and decides which links are D's (its own link, and the
 *     extra links with OWNED and slot == D); then, with no lock, for each of
 *     them that is QUEUED, remove_link under that record's lock (its
 *     `record` read again under that lock); gives the extra ones back
 *     (link_give_back) and the slot (slot_give_back) under the arena lock.  Nobody else gives back a dead slot's links, so the
 *     decision stays true after the arena lock is dropped.
 *
 * Threads:
 *   0  L, a live process with slot 1: link_take (an extra link), then
 *      enqueue_link on record R (it waits on R).
 *   1  reclaimer of dead slot D = 0: Arena_slot_reclaim.
 *   Initially: extra link 2 belonged to D, was given back (flags 0, its
 *   slot field still D) and is the free list's head -- L takes it; extra
 *   link 3 is D's, OWNED and queued on R -- the reclaimer must take it out
 *   of R's list and give it back.
 *
 * Promise, asserted in after(): the reclaimer never takes or gives back a
 * link that belongs to live slot L: L's link ends OWNED|QUEUED with slot
 * L, in R's list and not on the free list; D's link 3 ends out of R's list
 * and on the free list; no link is both listed and free.
 *
 * MODEL_OLD: the code before the fix.  link_take clears the link and
 * writes slot and flags with plain stores (relaxed: a plain aligned store)
 * under the arena lock; enqueue_link writes slot again under the record
 * lock; Arena_slot_reclaim takes the slot under the arena lock but reads
 * each link's flags (acquire) and slot afterwards with no lock.
 *
 * Under -DMODEL_OLD this model fails: the reclaimer reads link 2's flags
 * as OWNED -- L's take, a plain store, so no synchronisation -- and its slot as
 * D -- a stale value, allowed by the memory model -- judges it D's, and gives
 * L's link back -- after() asserts "the reclaimer took a live slot's link".
 *
 * Build: g++ -std=c++11 -O1 -o m links.cpp && ./m      (exit 0)
 *        g++ -std=c++11 -O1 -DMODEL_OLD -o m links.cpp && ./m  (exit 1)
 */
#include <relacy/relacy.hpp>

#include "futex.hpp"

static const unsigned LINK_QUEUED = 1u;
static const unsigned LINK_OWNED = 2u;
static const unsigned SLOT_CAPACITY = 2; /* links 0, 1: the slots' own */
static const unsigned LINKS = 4;         /* links 2, 3: extra */
static const unsigned SLOT_D = 0, SLOT_L = 1;
static const unsigned RECORD_R = 0;

struct links_model : rl::test_suite<links_model, 2> {
    rl::mutex arena_lock;
    rl::var<unsigned> link_free; /* index + 1, 0: empty (arena lock) */
    rl::var<unsigned> slot_owner[SLOT_CAPACITY];
    rl::var<unsigned> slot_in_use[SLOT_CAPACITY];

    /* the links (C: Link) */
    rl::atomic<unsigned> l_slot[LINKS];
    rl::atomic<unsigned> l_flags[LINKS];
    rl::atomic<unsigned> l_record[LINKS];
    rl::atomic<unsigned> l_fired[LINKS];
    rl::var<unsigned> l_next[LINKS];      /* record lock */
    rl::var<unsigned> l_next_free[LINKS]; /* arena lock */

    /* record R */
    rl::mutex record_lock;
    rl::atomic<unsigned> waiters; /* link + 1 */

    /* ghosts */
    rl::var<unsigned> l_link; /* the link L took, + 1 */

    void before()
    {
        for (unsigned i = 0; i < LINKS; i++) {
            l_slot[i]($).store(i < SLOT_CAPACITY ? i : SLOT_D, rl::mo_relaxed);
            l_flags[i]($).store(0, rl::mo_relaxed);
            l_record[i]($).store(0, rl::mo_relaxed);
            l_fired[i]($).store(0, rl::mo_relaxed);
            l_next[i]($) = 0;
            l_next_free[i]($) = 0;
        }
        slot_owner[SLOT_D]($) = 7; /* the dead process's entry + 1 */
        slot_in_use[SLOT_D]($) = 1;
        slot_owner[SLOT_L]($) = 8;
        slot_in_use[SLOT_L]($) = 1;
        /* link 2: D's once, given back, the free list's head */
        link_free($) = 3;
        /* link 3: D's, queued on R */
        l_flags[3]($).store(LINK_OWNED | LINK_QUEUED, rl::mo_relaxed);
        l_record[3]($).store(RECORD_R, rl::mo_relaxed);
        waiters($).store(4, rl::mo_relaxed);
        l_link($) = 0;
    }

    /* link_take(slot): arena lock around it; index + 1, 0 if none. */
    unsigned link_take(unsigned slot)
    {
        arena_lock.lock($);
        unsigned got = link_free($);
        if (got != 0) {
            unsigned link = got - 1;
            link_free($) = l_next_free[link]($);
#ifdef MODEL_OLD
            /* memset(&links[link], 0, sizeof(Link)), then plain stores */
            l_slot[link]($).store(0, rl::mo_relaxed);
            l_flags[link]($).store(0, rl::mo_relaxed);
            l_record[link]($).store(0, rl::mo_relaxed);
            l_fired[link]($).store(0, rl::mo_relaxed);
            l_next[link]($) = 0;
            l_next_free[link]($) = 0;
            l_slot[link]($).store(slot, rl::mo_relaxed);
            l_flags[link]($).store(LINK_OWNED, rl::mo_relaxed);
#else
            l_next[link]($) = 0;
            l_record[link]($).store(0, rl::mo_relaxed);
            l_fired[link]($).store(0, rl::mo_relaxed);
            l_next_free[link]($) = 0;
            l_slot[link]($).store(slot, rl::mo_relaxed);
            l_flags[link]($).store(LINK_OWNED, rl::mo_release);
#endif
        }
        arena_lock.unlock($);
        return got;
    }

    /* link_give_back: arena lock held. */
    void link_give_back(unsigned link)
    {
        l_flags[link]($).store(0, rl::mo_relaxed);
        l_next_free[link]($) = link_free($);
        link_free($) = link + 1;
    }

    /* enqueue_link: record lock held. */
    void enqueue_link(unsigned record, unsigned link, unsigned slot)
    {
#ifdef MODEL_OLD
        l_slot[link]($).store(slot, rl::mo_relaxed);
#else
        (void)slot;
#endif
        l_record[link]($).store(record, rl::mo_relaxed);
        l_fired[link]($).store(0, rl::mo_relaxed);
        unsigned owned = l_flags[link]($).load(rl::mo_relaxed) & LINK_OWNED;
        l_flags[link]($).store(owned | LINK_QUEUED, rl::mo_release);
        l_next[link]($) = waiters($).load(rl::mo_relaxed);
        waiters($).store(link + 1, rl::mo_release);
    }

    /* remove_link: record lock held; 1 if it was queued and is removed. */
    int remove_link(unsigned link)
    {
        if (!(l_flags[link]($).load(rl::mo_acquire) & LINK_QUEUED)) return 0;
        int at_head = 1;
        unsigned prev_link = 0;
        unsigned cur = waiters($).load(rl::mo_relaxed);
        for (unsigned guard = 0; cur != 0 && guard < LINKS; guard++) {
            if (cur == link + 1) {
                unsigned next = l_next[link]($);
                if (at_head)
                    waiters($).store(next, rl::mo_release);
                else
                    l_next[prev_link]($) = next;
                l_flags[link]($).fetch_and(~LINK_QUEUED, rl::mo_release);
                return 1;
            }
            at_head = 0;
            prev_link = cur - 1;
            cur = l_next[prev_link]($);
        }
        l_flags[link]($).fetch_and(~LINK_QUEUED, rl::mo_release);
        return 0;
    }

    /* The steps of Arena_slot_reclaim for one link judged the dead slot's. */
    void reclaim_link(unsigned i)
    {
#ifdef MODEL_OLD
        if (l_flags[i]($).load(rl::mo_acquire) & LINK_QUEUED) {
            unsigned index = l_record[i]($).load(rl::mo_relaxed);
            if (index == RECORD_R) {
                record_lock.lock($);
                remove_link(i);
                record_lock.unlock($);
            }
        }
#else
        /* The owner is dead: nobody queues the link again; the record is
         * read again under that record's lock. */
        unsigned index = l_record[i]($).load(rl::mo_relaxed);
        if ((l_flags[i]($).load(rl::mo_acquire) & LINK_QUEUED) && index == RECORD_R) {
            record_lock.lock($);
            if (l_record[i]($).load(rl::mo_relaxed) == index) remove_link(i);
            record_lock.unlock($);
        }
#endif
        if (i >= SLOT_CAPACITY) {
            arena_lock.lock($);
            link_give_back(i);
            arena_lock.unlock($);
        }
    }

    /* Arena_slot_reclaim(D, its entry, epoch). */
    void arena_slot_reclaim(unsigned slot, unsigned owner)
    {
        arena_lock.lock($);
        bool ours = slot_in_use[slot]($) && slot_owner[slot]($) == owner;
        if (ours) slot_owner[slot]($) = 0;
#ifndef MODEL_OLD
        bool mine[LINKS];
        for (unsigned i = 0; ours && i < LINKS; i++)
            mine[i] = i < SLOT_CAPACITY ? i == slot
                                        : (l_flags[i]($).load(rl::mo_relaxed) & LINK_OWNED) &&
                                              l_slot[i]($).load(rl::mo_relaxed) == slot;
#endif
        arena_lock.unlock($);
        if (!ours) return;
        for (unsigned i = 0; i < LINKS; i++) {
#ifdef MODEL_OLD
            bool is_mine = i < SLOT_CAPACITY ? i == slot
                                             : (l_flags[i]($).load(rl::mo_acquire) & LINK_OWNED) &&
                                                   l_slot[i]($).load(rl::mo_relaxed) == slot;
#else
            bool is_mine = mine[i];
#endif
            if (is_mine) reclaim_link(i);
        }
        arena_lock.lock($);
        slot_in_use[slot]($) = 0; /* slot_give_back */
        arena_lock.unlock($);
    }

    void thread(unsigned index)
    {
        if (index == 0) { /* L */
            unsigned got = link_take(SLOT_L);
            l_link($) = got;
            if (got == 0) return;
            record_lock.lock($);
            enqueue_link(RECORD_R, got - 1, SLOT_L);
            record_lock.unlock($);
        } else {
            arena_slot_reclaim(SLOT_D, 7);
        }
    }

    void after()
    {
        unsigned listed[LINKS] = {0, 0, 0, 0}, free_[LINKS] = {0, 0, 0, 0};
        unsigned at = waiters($).load(rl::mo_relaxed);
        for (unsigned guard = 0; at != 0 && guard <= LINKS; guard++) {
            listed[at - 1]++;
            at = l_next[at - 1]($);
        }
        RL_ASSERT(at == 0 && "R's waiter list has a cycle");
        at = link_free($);
        for (unsigned guard = 0; at != 0 && guard <= LINKS; guard++) {
            free_[at - 1]++;
            at = l_next_free[at - 1]($);
        }
        RL_ASSERT(at == 0 && "the free list has a cycle");
        unsigned mine = l_link($);
        RL_ASSERT(mine != 0 && "L found no free link");
        unsigned m = mine - 1;
        RL_ASSERT(free_[m] == 0 && listed[m] == 1 && "the reclaimer took a live slot's link");
        RL_ASSERT(l_flags[m]($).load(rl::mo_relaxed) == (LINK_OWNED | LINK_QUEUED) &&
                  l_slot[m]($).load(rl::mo_relaxed) == SLOT_L && "the reclaimer took a live slot's link");
        for (unsigned i = SLOT_CAPACITY; i < LINKS; i++) {
            if (i == m) continue;
            RL_ASSERT(free_[i] == 1 && listed[i] == 0 && "a dead slot's link was not reclaimed");
        }
        RL_ASSERT(slot_in_use[SLOT_D]($) == 0 && "the dead slot was not given back");
    }
};

int main() { return run_model<links_model>("links"); }
