/*
 * Relacy model: the arena lock word, with takeover from a dead holder.
 *
 * Mirrors (src/native/locks.c) lock_word and unlock_word, and
 * (src/native/liveness.c) owner_alive.
 *
 * The protocol.  A lock word is 0 (free), label (held by the lock owner
 * named by label) or label | LOCK_WAITERS (held, someone may sleep on it).
 *   - lock_word: one CAS 0 -> label (acquire); a spin of load + CAS
 *     (LOCK_SPINS of them; one here); then the sleep loop: read the word;
 *     if 0, CAS 0 -> label | LOCK_WAITERS (acquire); else mark it
 *     LOCK_WAITERS (CAS, relaxed) and futex-sleep on exactly the value read,
 *     for at most LOCK_CHECK_NS.  A sleep that timed out asks whether the
 *     word's holder lives (owner_alive) and, if it is dead, takes the lock
 *     over with ONE CAS from exactly the word it read (acquire).
 *   - unlock_word: CAS label -> 0 (release), refusing a word that is not
 *     its own (a fault: "taken over while we lived"); futex wake one if
 *     LOCK_WAITERS was set.
 *   - owner_alive: the holder's byte is held (an OFD lock, kernel state):
 *     modelled as a seq_cst flag per lock owner that the dying thread's
 *     "kernel" clears when the thread stops.  Our own label is alive.
 *
 * Futex (futex.hpp): every sleep here is timed (LOCK_CHECK_NS).  A wake
 * before the timeout only makes the C re-read the word, which the
 * timed-out path does too.  A sleeper's loop is bounded (ROUNDS turns; a
 * thread still waiting then gives up, which only cuts the model short).
 *
 * Threads:
 *   0  D: takes the lock, writes the critical section's data, and dies
 *      there (the lock stays held with D's label; D's byte is dropped).
 *   1  R1, 2  R2: live; each takes the lock (sleeping, and recovering it
 *      from D if D is dead by then), writes the data, gives it back.
 *
 * Promise:
 *   - mutual exclusion: the critical section writes a plain rl::var; two
 *     holders at once are a data race, which Relacy reports (D's write is
 *     ordered before a recoverer's by the liveness flag: the kernel's
 *     release of the byte, then the recoverer's query);
 *   - no two recoverers both win: after() asserts at most one recovery
 *     (only D dies);
 *   - a live holder is never taken over: unlock_word of a live holder
 *     finds its own label in the word (asserted; the C counts it as a
 *     lock fault).
 *
 * MODEL_OLD: the takeover is "check, then store": after the sleep timed out
 * and the word still reads as the dead holder's and owner_alive says dead,
 * the recoverer writes label | LOCK_WAITERS with a plain (relaxed) store
 * instead of the CAS from the word it read.  Two recoverers that both
 * checked before either wrote both win.
 *
 * Under -DMODEL_OLD this model fails: R1 and R2 both time out on D's word,
 * both find D dead, one stores its label and enters, the other stores its
 * own over it and enters too -- Relacy reports a DATA RACE on the critical section's
 * data (the second recovery is the first thing it sees).
 *
 * Build: g++ -std=c++11 -O1 -o m lock_word.cpp && ./m             (exit 0)
 *        g++ -std=c++11 -O1 -DMODEL_OLD -o m lock_word.cpp && ./m  (exit 1)
 */
#include <relacy/relacy.hpp>

#include "futex.hpp"

static const unsigned LOCK_WAITERS = 0x80000000u;
static const unsigned THREADS = 3;
static const unsigned D = 0;     /* the holder that dies */
static const unsigned ROUNDS = 4; /* turns of a sleeper's loop modelled */

struct lock_word_model : rl::test_suite<lock_word_model, THREADS> {
    rl::atomic<unsigned> word;        /* the lock word */
    rl::atomic<int> alive[THREADS];   /* each lock owner's byte: the kernel's truth */
    rl::var<unsigned> data;           /* what the critical section guards */
    rl::atomic<int> recoveries;       /* header->recoveries */
    rl::atomic<int> gave_up;          /* model cut-offs (not a failure) */

    void before()
    {
        word($).store(0, rl::mo_relaxed);
        for (unsigned i = 0; i != THREADS; i++) alive[i]($).store(1, rl::mo_relaxed);
        data($) = 0;
        recoveries($).store(0, rl::mo_relaxed);
        gave_up($).store(0, rl::mo_relaxed);
    }

    void after()
    {
        RL_ASSERT(recoveries($).load(rl::mo_relaxed) <= 1);
    }

    static unsigned label_of(unsigned thread) { return thread + 1; }

    /* owner_alive: 1 for our own label; else whether its byte is held */
    bool owner_alive(unsigned me, unsigned label)
    {
        if (label == label_of(me)) return true;
        return alive[label - 1]($).load(rl::mo_seq_cst) != 0;
    }

    /* lock_word: true once the word is ours (false: the model gave up) */
    bool lock_word(unsigned me)
    {
        unsigned label = label_of(me);
        unsigned seen = 0;
        if (word($).compare_exchange_strong(seen, label, rl::mo_acquire, rl::mo_relaxed)) return true;
        /* the spin: LOCK_SPINS turns in the C, one here */
        seen = 0;
        if (word($).load(rl::mo_relaxed) == 0 &&
            word($).compare_exchange_strong(seen, label, rl::mo_acquire, rl::mo_relaxed))
            return true;
        for (unsigned round = 0; round != ROUNDS; round++) {
            seen = word($).load(rl::mo_relaxed);
            if (seen == 0) {
                if (word($).compare_exchange_strong(seen, label | LOCK_WAITERS, rl::mo_acquire,
                                                    rl::mo_relaxed))
                    return true;
                continue;
            }
            if (!(seen & LOCK_WAITERS)) {
                unsigned marked = seen | LOCK_WAITERS;
                if (!word($).compare_exchange_strong(seen, marked, rl::mo_relaxed, rl::mo_relaxed))
                    continue;
                seen = marked;
            }
            if (os_wait_word(word, seen, TIMED) != TIMED_OUT) continue;
            /* held for a whole LOCK_CHECK_NS: is its holder alive? */
            if (word($).load(rl::mo_relaxed) == seen && !owner_alive(me, seen & ~LOCK_WAITERS)) {
#ifndef MODEL_OLD
                if (word($).compare_exchange_strong(seen, label | LOCK_WAITERS, rl::mo_acquire,
                                                    rl::mo_relaxed)) {
                    recoveries($).fetch_add(1, rl::mo_relaxed);
                    return true;
                }
#else
                /* the old takeover: check, then a plain store */
                word($).store(label | LOCK_WAITERS, rl::mo_relaxed);
                recoveries($).fetch_add(1, rl::mo_relaxed);
                return true;
#endif
            }
        }
        gave_up($).fetch_add(1, rl::mo_relaxed);
        return false;
    }

    void unlock_word(unsigned me)
    {
        unsigned label = label_of(me);
        unsigned seen = word($).load(rl::mo_relaxed);
        do {
            /* not ours: taken over while we lived (a lock fault in the C) */
            RL_ASSERT((seen & ~LOCK_WAITERS) == label);
            if ((seen & ~LOCK_WAITERS) != label) return;
        } while (!word($).compare_exchange_strong(seen, 0, rl::mo_release, rl::mo_relaxed));
        if (seen & LOCK_WAITERS) os_wake_word(word, 1);
    }

    void critical_section(unsigned me)
    {
        unsigned before = data($);
        data($) = before + 1 + me;
    }

    void thread(unsigned me)
    {
        if (me == D) {
            if (!lock_word(me)) return;
            critical_section(me);
            /* D dies holding the lock: the kernel drops its byte */
            alive[me]($).store(0, rl::mo_seq_cst);
            return;
        }
        if (!lock_word(me)) return;
        critical_section(me);
        unlock_word(me);
    }
};

int main() { return run_model<lock_word_model>("lock_word"); }
