/*
 * Relacy model: record allocation against a stale retain.
 *
 * Mirrors, in src/native/records.c: Arena_record_alloc, Arena_record_retain and
 * record_release_one.
 *
 * The protocol (FIX).  A record's kind, serial, refcount and inflight are
 * plain fields guarded by the record lock.
 *   - record_release_one: under the record lock, decrement refcount; at 0
 *     write kind = KIND_FREE (still under it); then, under the arena lock,
 *     push the record on the free list.
 *   - Arena_record_alloc: under the arena lock, pop the free list and bump
 *     the arena's serial; release the arena lock; then under the RECORD
 *     lock initialise refcount = 1, inflight = 0, next_free, serial, and
 *     kind LAST (off the free list and not yet kind, nobody else writes it).
 *   - Arena_record_retain(index, serial): under the record lock, fail if
 *     kind == KIND_FREE or the serial differs, else refcount++.
 *
 * Threads:
 *   0  the last holder of incarnation s1 = 1: record_release_one (frees it).
 *   1  Arena_record_alloc: takes the record if it is on the free list by
 *      then (a new incarnation, serial s2 = 2).
 *   2  a stale handle of incarnation s1: Arena_record_retain(serial 1).
 *   All fields are plain (rl::var), so Relacy also reports any access that
 *   no lock orders.
 *
 * Promise, asserted in after(): a stale retain never increments the new
 * incarnation's refcount: if the record was allocated again, it is whole
 * (kind, serial s2, refcount 1 for its new owner) and the stale retain
 * failed; if not, the stale retain either failed or kept incarnation s1
 * alive.
 *
 * MODEL_OLD: Arena_record_alloc initialises kind, serial, refcount and
 * inflight under the arena lock only (the code before the fix), so a retain
 * holding the record lock reads them with nothing ordering the two.
 *
 * Under -DMODEL_OLD this model fails: the release frees the record, the
 * allocator pops it and writes refcount/serial/kind under the arena lock
 * while the stale retain reads kind under the record lock -- Relacy
 * reports "DATA RACE" on the record's plain fields (the retain could see
 * the new kind with the old serial, or vice versa, and take a reference on
 * the new incarnation).
 *
 * Build: g++ -std=c++11 -O1 -o m records.cpp && ./m      (exit 0)
 *        g++ -std=c++11 -O1 -DMODEL_OLD -o m records.cpp && ./m  (exit 1)
 */
#include <relacy/relacy.hpp>

#include "futex.hpp"

static const unsigned KIND_FREE = 0u;
static const unsigned KIND_RESULT = 3u;
static const unsigned INDEX = 0;

struct records_model : rl::test_suite<records_model, 3> {
    rl::mutex arena_lock;
    rl::var<unsigned> record_free;  /* index + 1 (arena lock) */
    rl::var<unsigned> arena_serial; /* Header.serial (arena lock) */

    rl::mutex record_lock;
    rl::var<unsigned> kind, serial, refcount, inflight;
    rl::var<unsigned> next_free; /* arena lock */

    /* ghosts */
    rl::var<unsigned> allocated_serial; /* 0: the allocator got nothing */
    rl::var<int> retained;

    void before()
    {
        record_free($) = 0;
        arena_serial($) = 1;
        kind($) = KIND_RESULT;
        serial($) = 1;
        refcount($) = 1;
        inflight($) = 0;
        next_free($) = 0;
        allocated_serial($) = 0;
        retained($) = 0;
    }

    /* record_release_one: 1 if it freed the record. */
    int record_release_one()
    {
        record_lock.lock($);
        if (kind($) == KIND_FREE || refcount($) == 0) {
            record_lock.unlock($);
            return -1;
        }
        refcount($) = refcount($) - 1;
        if (refcount($) > 0) {
            record_lock.unlock($);
            return 0;
        }
        kind($) = KIND_FREE;
        record_lock.unlock($);
        arena_lock.lock($);
        next_free($) = record_free($);
        record_free($) = INDEX + 1;
        arena_lock.unlock($);
        return 1;
    }

    /* Arena_record_alloc(kind): the serial, 0 if the free list was empty. */
    unsigned arena_record_alloc(unsigned k)
    {
        arena_lock.lock($);
        if (record_free($) == 0) {
            arena_lock.unlock($);
            return 0; /* the real code bump-allocates another record */
        }
        record_free($) = next_free($);
        arena_serial($) = arena_serial($) + 1;
        unsigned s = arena_serial($);
#ifdef MODEL_OLD
        refcount($) = 1;
        inflight($) = 0;
        next_free($) = 0;
        serial($) = s;
        kind($) = k;
        arena_lock.unlock($);
#else
        arena_lock.unlock($);
        record_lock.lock($);
        refcount($) = 1;
        inflight($) = 0;
        next_free($) = 0;
        serial($) = s;
        kind($) = k; /* last */
        record_lock.unlock($);
#endif
        return s;
    }

    /* Arena_record_retain(index, serial, adopt=0): true if retained. */
    bool arena_record_retain(unsigned s)
    {
        record_lock.lock($);
        if (kind($) == KIND_FREE || serial($) != s) {
            record_lock.unlock($);
            return false; /* LookupError */
        }
        refcount($) = refcount($) + 1;
        record_lock.unlock($);
        return true;
    }

    void thread(unsigned index)
    {
        if (index == 0)
            record_release_one();
        else if (index == 1)
            allocated_serial($) = arena_record_alloc(KIND_RESULT);
        else
            retained($) = arena_record_retain(1);
    }

    void after()
    {
        if (allocated_serial($) != 0) {
            RL_ASSERT(allocated_serial($) == 2 && serial($) == 2 && kind($) == KIND_RESULT &&
                      "the new incarnation is not whole");
            RL_ASSERT(!retained($) && refcount($) == 1 &&
                      "a stale retain took a reference on the new incarnation");
        } else if (retained($)) {
            RL_ASSERT(serial($) == 1 && kind($) == KIND_RESULT && refcount($) == 1 &&
                      "the retained incarnation was freed");
        } else {
            RL_ASSERT(kind($) == KIND_FREE && record_free($) == INDEX + 1 && "the record leaked");
        }
    }
};

int main() { return run_model<records_model>("records"); }
