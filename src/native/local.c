/*
 * Process-local locks: a futex word no other process sees, for what the
 * threads of one process share (the watch's list, the block views, the
 * process lock of an arena, the test points).  Held around a few loads
 * and stores, never across a sleep of its holder.  The bottom floor with
 * os.c: it calls nothing else of ours.
 */
#include "arena.h"

/* 0 free, 1 held, 2 held and maybe slept on (Drepper, "Futexes Are
 * Tricky", mutex 2).  Never held across a sleep of its own holder. */
void
local_lock(uint32_t *word)
{
    uint32_t seen = 0;
    if (cas_acquire(word, &seen, 1))
        return;
    if (seen != 2) seen = exchange_acquire(word, 2);
    while (seen != 0) {
        os_wait_private(word, 2, -1);
        seen = exchange_acquire(word, 2);
    }
}

/* --- the process-local lock (the watch's list) ----------------------- */

void
local_unlock(uint32_t *word)
{
    if (exchange_release(word, 0) == 2) os_wake_private(word, 1);
}
