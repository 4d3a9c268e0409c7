/*
 * Relacy model: large value block states against a dead writer's forget.
 *
 * Mirrors, in src/native/heap.c: large_take, large_pop, pop_list, large_adopt,
 * large_abandon, large_free and Arena_heap_forget.  (reserve_refill takes a
 * block as WRITING for itself and gives it back with the same CAS as
 * large_abandon: the same state word, not modelled separately.)
 *
 * The protocol (FIX).  The writer's identity is in the state word itself:
 * while attach entry `e` writes a block its state is
 * BLOCK_WRITING | ((e + 1) << 8), one atomic; then LIVE, FREEING, FREE.
 *   - large_take: under the arena lock, pop a free block (large_pop) and
 *     store state = writing-by-entry (release).
 *   - large_adopt (publish): CAS writing-by-entry -> LIVE; it fails if
 *     anyone took the block meanwhile.
 *   - Arena_heap_forget(entry) (the process of `entry` is gone): for every
 *     block, CAS writing-by-entry -> FREEING, and large_free on success.
 *   - large_free: state = FREE (release), then a lock-free CAS push on one
 *     of the class's two free lists: warm (its pages kept) or cold (given
 *     back); pops happen under the arena lock only, warm before cold.
 *
 * Threads:
 *   0  forgetter: Arena_heap_forget(A) for dead entry A, over both blocks.
 *   1  C, a live writer (entry 1): large_take, writes the value, large_adopt.
 *   Initially block 0 is FREE on the cold list, last written by A (the old
 *   code's `owner` field still says A); block 1 is WRITING by A (A died
 *   mid-copy), so the forget has a block it must give back: onto the warm
 *   list, its pages kept.  C's pop reads the warm list first, so it takes
 *   block 1 if the forget pushed it already and block 0 from the cold list
 *   if not: both lists are pushed or popped while the other side races.
 *
 * Promise, asserted in after(): a live writer's block is never freed while
 * it is written or after it is published: C's large_adopt succeeds, C's
 * block ends LIVE and is not on the free list; every other block is FREE
 * and on the free list (A's unpublished block came back); the list holds
 * each block at most once.
 *
 * MODEL_OLD: the code before the fix.  A separate `owner` field is written
 * plainly by large_take and never reset (modelled as a relaxed atomic: a
 * plain aligned store); Arena_heap_forget reads owner == entry and then
 * CASes state WRITING -> FREEING; large_adopt checks state == WRITING and
 * then stores LIVE (no CAS).
 *
 * Under -DMODEL_OLD this model fails: the forgetter reads block 0's stale
 * owner A, C takes block 0 (WRITING), the forgetter's CAS WRITING ->
 * FREEING wins and frees C's block while C writes it; C's large_adopt then
 * finds it FREE -- after() asserts "a live writer's block was freed".
 * (The old code had one free list per class; which list a block goes on
 * does not change that bug, so MODEL_OLD keeps the two.)
 *
 * Build: g++ -std=c++11 -O1 -o m blocks.cpp && ./m      (exit 0)
 *        g++ -std=c++11 -O1 -DMODEL_OLD -o m blocks.cpp && ./m  (exit 1)
 */
#include <relacy/relacy.hpp>

#include "futex.hpp"

static const unsigned BLOCK_FREE = 0u;
static const unsigned BLOCK_WRITING = 1u;
static const unsigned BLOCK_LIVE = 2u;
static const unsigned BLOCK_FREEING = 3u;
static const unsigned BLOCKS = 2;
static const unsigned ENTRY_A = 0, ENTRY_C = 1;

static unsigned writing_by(unsigned entry)
{
#ifdef MODEL_OLD
    (void)entry;
    return BLOCK_WRITING;
#else
    return BLOCK_WRITING | ((entry + 1) << 8);
#endif
}

struct blocks_model : rl::test_suite<blocks_model, 2> {
    rl::mutex arena_lock;
    rl::atomic<unsigned> warm_head; /* block index + 1, 0: empty */
    rl::atomic<unsigned> cold_head;
    rl::var<unsigned> next_free[BLOCKS];
    rl::atomic<unsigned> state[BLOCKS];
#ifdef MODEL_OLD
    rl::atomic<unsigned> owner[BLOCKS];
#endif
    rl::var<unsigned> payload[BLOCKS];

    /* ghosts */
    rl::var<unsigned> c_block; /* index + 1 of the block C took */
    rl::var<int> c_adopted;

    void before()
    {
        state[0]($).store(BLOCK_FREE, rl::mo_relaxed);
        next_free[0]($) = 0;
        warm_head($).store(0, rl::mo_relaxed);
        cold_head($).store(1, rl::mo_relaxed);
        state[1]($).store(writing_by(ENTRY_A), rl::mo_relaxed);
        next_free[1]($) = 0;
#ifdef MODEL_OLD
        owner[0]($).store(ENTRY_A, rl::mo_relaxed);
        owner[1]($).store(ENTRY_A, rl::mo_relaxed);
#endif
        payload[0]($) = 0;
        payload[1]($) = 0;
        c_block($) = 0;
        c_adopted($) = 0;
    }

    /* large_free: FREE, then a lock-free CAS push (here always warm: the
     * forgotten block keeps its pages). */
    void large_free(unsigned b)
    {
        state[b]($).store(BLOCK_FREE, rl::mo_release);
        unsigned old = warm_head($).load(rl::mo_acquire);
        do {
            next_free[b]($) = old;
        } while (!warm_head($).compare_exchange_weak(old, b + 1, rl::mo_acq_rel, rl::mo_acquire));
    }

    /* pop_list: arena lock held. */
    unsigned pop_list(rl::atomic<unsigned> &head)
    {
        unsigned old = head($).load(rl::mo_acquire);
        while (old != 0) {
            unsigned next = next_free[old - 1]($);
            if (head($).compare_exchange_weak(old, next, rl::mo_acq_rel, rl::mo_acquire)) break;
        }
        return old;
    }

    /* large_pop: warm before cold. */
    unsigned large_pop()
    {
        unsigned got = pop_list(warm_head);
        return got != 0 ? got : pop_list(cold_head);
    }

    /* large_take(entry): index + 1 of the block, 0 if none. */
    unsigned large_take(unsigned entry)
    {
        arena_lock.lock($);
        unsigned got = large_pop();
        if (got != 0) {
#ifdef MODEL_OLD
            owner[got - 1]($).store(entry, rl::mo_relaxed);
#endif
            state[got - 1]($).store(writing_by(entry), rl::mo_release);
        }
        arena_lock.unlock($);
        return got;
    }

    /* large_adopt: publish block b written by entry. */
    bool large_adopt(unsigned b, unsigned entry)
    {
#ifdef MODEL_OLD
        if (state[b]($).load(rl::mo_acquire) != writing_by(entry)) return false; /* check_block */
        state[b]($).store(BLOCK_LIVE, rl::mo_release);
        return true;
#else
        unsigned expected = writing_by(entry);
        return state[b]($).compare_exchange_strong(expected, BLOCK_LIVE, rl::mo_acq_rel, rl::mo_acquire);
#endif
    }

    /* Arena_heap_forget(entry). */
    void arena_heap_forget(unsigned entry)
    {
        for (unsigned b = 0; b < BLOCKS; b++) {
            unsigned expected = writing_by(entry);
#ifdef MODEL_OLD
            if (owner[b]($).load(rl::mo_relaxed) != entry) continue;
#endif
            if (state[b]($).compare_exchange_strong(expected, BLOCK_FREEING, rl::mo_acq_rel, rl::mo_acquire))
                large_free(b);
        }
    }

    void thread(unsigned index)
    {
        if (index == 0) {
            arena_heap_forget(ENTRY_A);
        } else {
            unsigned got = large_take(ENTRY_C);
            c_block($) = got;
            if (got == 0) return;
            payload[got - 1]($) = 42; /* the copy */
            c_adopted($) = large_adopt(got - 1, ENTRY_C);
        }
    }

    void after()
    {
        unsigned on_list[BLOCKS] = {0, 0};
        rl::atomic<unsigned> *heads[2] = {&warm_head, &cold_head};
        for (unsigned list = 0; list < 2; list++) {
            unsigned at = (*heads[list])($).load(rl::mo_relaxed);
            for (unsigned guard = 0; at != 0 && guard <= BLOCKS; guard++) {
                on_list[at - 1]++;
                at = next_free[at - 1]($);
            }
            RL_ASSERT(at == 0 && "a free list has a cycle");
        }
        unsigned mine = c_block($);
        RL_ASSERT(mine != 0 && "C found no free block");
        RL_ASSERT(c_adopted($) && "a live writer's block was freed");
        for (unsigned b = 0; b < BLOCKS; b++) {
            unsigned s = state[b]($).load(rl::mo_relaxed);
            if (b + 1 == mine) {
                RL_ASSERT(s == BLOCK_LIVE && on_list[b] == 0 && "a published block is free");
            } else {
                RL_ASSERT(s == BLOCK_FREE && on_list[b] == 1 && "the dead writer's block did not come back");
            }
        }
    }
};

int main() { return run_model<blocks_model>("blocks"); }
