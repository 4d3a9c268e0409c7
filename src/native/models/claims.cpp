/*
 * Relacy model: claim, lapse and fail of an AsyncResult's claim.
 *
 * Mirrors, in src/native/liveness.c: Arena_claim, claim_lost, record_fail_claim,
 * Arena_claim_abandon, entry_alive; in src/native/wait.c: record_recheck.
 *
 * The protocol.  A record has `claim` (claimer's attach entry + 1, plus the
 * CLAIM_DEAD bit once failed), `claim_epoch` (the claimer's join epoch) and
 * `state` (STATE_FLAG once set).  A process is named by (entry, epoch): a
 * re-join of an entry bumps its epoch, and entry_alive(entry, epoch) is true
 * only while the entry is ATTACHED at that epoch and its byte is held (the
 * OFD lock, modelled as a sequentially consistent flag the kernel clears when the holder
 * dies).
 *   - Arena_claim, under the record lock: allowed if the flag is down and
 *     there is no claim, or it is dead-marked, or it is ours, or its
 *     (entry, claim_epoch) is not alive; stores claim_epoch (relaxed), then
 *     claim (release).
 *   - A waiter (record_recheck) judges lock-free with claim_lost (claim set,
 *     not DEAD, flag down, (entry, claim_epoch) not alive) and then calls
 *     record_fail_claim, which (FIX) judges again under the record lock:
 *     it re-reads claim AND claim_epoch there and fails the record only if
 *     the claim is set, not DEAD, the flag is down and the claimer named by
 *     what it read under the lock is not alive.  Failing = store
 *     claim|CLAIM_DEAD, publish the failure, set the flag (still under the
 *     lock).  Arena_claim_abandon takes the same record_fail_claim path.
 *
 * Threads:
 *   0  X: joined as entry 0 at epoch 1; claims the record, then dies (its
 *      byte is dropped) -- a process killed after its claim.
 *   1  waiter: claim_lost, and if lost, record_fail_claim (record_recheck).
 *   2  Y: a live process.  If X's byte is free, Y re-joins X's entry 0 (the
 *      dead entry reclaimed and taken again: epoch 2), else it uses its own
 *      entry 1 (epoch 1).  Then it claims the record.  Y never dies.
 *   With the re-join, X's and Y's claim words are equal, entry 0 + 1:: only
 *   claim_epoch tells them apart, so the re-judgement must read it under the
 *   lock too.
 *
 * Promise, asserted in after(): a claim whose claimer is alive is never
 * failed.  If the record was failed, the claim failed was X's (entry 0,
 * epoch 1), and never is the record failed after Y's claim succeeded.
 *
 * MODEL_OLD: record_fail_claim checks under the lock only claim != 0, not
 * CLAIM_DEAD and flag down (the code before the fix): the lock-free
 * judgement about X is applied to whatever claim is there by then.
 *
 * Under -DMODEL_OLD this model fails: X claims and dies, the waiter's
 * claim_lost finds X's claim lost, Y, re-joined as entry 0 at epoch 2, claims,
 * then the waiter's record_fail_claim fails Y's live claim -- after()
 * asserts "failed a claim whose claimer is alive".
 *
 * Build: g++ -std=c++11 -O1 -o m claims.cpp && ./m      (exit 0)
 *        g++ -std=c++11 -O1 -DMODEL_OLD -o m claims.cpp && ./m  (exit 1)
 */
#include <relacy/relacy.hpp>

#include "futex.hpp"

static const unsigned CLAIM_DEAD = 0x40000000u;
static const unsigned STATE_FLAG = 1u;
static const unsigned ENTRY_FREE = 0u;
static const unsigned ENTRY_ATTACHED = 1u;
static const unsigned ENTRIES = 2;

static unsigned claim_entry(unsigned claim) { return claim & 0xffffu; }

struct claims_model : rl::test_suite<claims_model, 3> {
    /* the attach table */
    rl::atomic<unsigned> entry_state[ENTRIES];
    rl::atomic<unsigned> entry_epoch[ENTRIES];
    rl::atomic<int> byte_held[ENTRIES]; /* the OFD byte lock: the kernel's truth */

    /* the record */
    rl::mutex record_lock;
    rl::atomic<unsigned> claim;
    rl::atomic<unsigned> claim_epoch;
    rl::atomic<unsigned> state;
    rl::var<unsigned> failure; /* the failure published in the value slot */

    /* ghosts: observation only */
    rl::var<unsigned> failed_entry, failed_epoch; /* whose claim was failed */
    rl::atomic<int> y_claimed;

    void before()
    {
        entry_state[0]($).store(ENTRY_ATTACHED, rl::mo_relaxed);
        entry_epoch[0]($).store(1, rl::mo_relaxed);
        byte_held[0]($).store(1, rl::mo_relaxed); /* X */
        entry_state[1]($).store(ENTRY_ATTACHED, rl::mo_relaxed);
        entry_epoch[1]($).store(1, rl::mo_relaxed);
        byte_held[1]($).store(1, rl::mo_relaxed); /* Y's own entry */
        claim($).store(0, rl::mo_relaxed);
        claim_epoch($).store(0, rl::mo_relaxed);
        state($).store(0, rl::mo_relaxed);
        failure($) = 0;
        failed_entry($) = 0xffff;
        failed_epoch($) = 0;
        y_claimed($).store(0, rl::mo_relaxed);
    }

    /* entry_alive(): ATTACHED at that epoch, and its byte held. */
    bool entry_alive(unsigned entry, unsigned epoch)
    {
        if (entry >= ENTRIES) return false;
        if (entry_state[entry]($).load(rl::mo_acquire) != ENTRY_ATTACHED) return false;
        if (entry_epoch[entry]($).load(rl::mo_acquire) != epoch) return false;
        return byte_held[entry]($).load(rl::mo_seq_cst) != 0;
    }

    /* Arena_claim() by the process joined as (entry, epoch). */
    bool arena_claim(unsigned entry, unsigned epoch)
    {
        unsigned mine = entry + 1;
        record_lock.lock($);
        unsigned c = claim($).load(rl::mo_relaxed);
        unsigned e = claim_epoch($).load(rl::mo_relaxed);
        bool set = (state($).load(rl::mo_acquire) & STATE_FLAG) != 0;
        bool ours = c != 0 && claim_entry(c) == mine && e == epoch;
        bool taken = c != 0 && !(c & CLAIM_DEAD) && !ours && entry_alive(claim_entry(c) - 1, e);
        if (!set && !taken) {
            claim_epoch($).store(epoch, rl::mo_relaxed);
            claim($).store(mine, rl::mo_release);
        }
        record_lock.unlock($);
        return !set && !taken;
    }

    /* claim_lost(): lock-free judgement. */
    bool claim_lost()
    {
        unsigned c = claim($).load(rl::mo_acquire);
        if (c == 0 || (c & CLAIM_DEAD)) return false;
        if (state($).load(rl::mo_acquire) & STATE_FLAG) return false;
        unsigned e = claim_epoch($).load(rl::mo_acquire);
        return !entry_alive(claim_entry(c) - 1, e);
    }

    /* record_fail_claim(): 1 if this call failed the record. */
    bool record_fail_claim()
    {
        record_lock.lock($);
        unsigned c = claim($).load(rl::mo_relaxed);
        unsigned e = claim_epoch($).load(rl::mo_relaxed);
        bool fail = c != 0 && !(c & CLAIM_DEAD) && !(state($).load(rl::mo_acquire) & STATE_FLAG);
#ifndef MODEL_OLD
        fail = fail && !entry_alive(claim_entry(c) - 1, e);
#endif
        if (fail) {
            claim($).store(c | CLAIM_DEAD, rl::mo_release);
            failure($) = claim_entry(c); /* record_publish_value: the failure */
            failed_entry($) = claim_entry(c) - 1;
            failed_epoch($) = e;
            state($).fetch_or(STATE_FLAG, rl::mo_acq_rel); /* set: publish_unlock */
        }
        record_lock.unlock($);
        return fail;
    }

    void thread(unsigned index)
    {
        if (index == 0) { /* X: claim, then die */
            arena_claim(0, 1);
            byte_held[0]($).store(0, rl::mo_seq_cst); /* killed: the kernel drops the byte */
        } else if (index == 1) { /* waiter: record_recheck */
            if (claim_lost()) record_fail_claim();
        } else { /* Y: a live process */
            unsigned entry = 1, epoch = 1;
            if (byte_held[0]($).load(rl::mo_seq_cst) == 0) {
                /* X's entry is dead: reclaimed (FREE), re-joined by Y at a new
                 * epoch, Y's byte taken, ATTACHED: Arena_entry_write's order. */
                entry_state[0]($).store(ENTRY_FREE, rl::mo_release);
                entry_epoch[0]($).store(2, rl::mo_release);
                byte_held[0]($).store(1, rl::mo_seq_cst);
                entry_state[0]($).store(ENTRY_ATTACHED, rl::mo_release);
                entry = 0;
                epoch = 2;
            }
            if (arena_claim(entry, epoch)) y_claimed($).store(1, rl::mo_relaxed);
        }
    }

    void after()
    {
        bool failed = (claim($).load(rl::mo_relaxed) & CLAIM_DEAD) != 0;
        if (failed) {
            RL_ASSERT(failed_entry($) == 0 && failed_epoch($) == 1 &&
                      "failed a claim whose claimer is alive");
            RL_ASSERT(!y_claimed($).load(rl::mo_relaxed) && "failed a claim whose claimer is alive");
        }
    }
};

int main() { return run_model<claims_model>("claims"); }
