/*
 * Relacy model: the watch, and its hand-over when the watcher leaves.
 *
 * Mirrors (src/native/wait.c) watch_register, watch_unregister,
 * watch_holds, watch_round and watch_park (each turn of the sleep of every
 * registered slot, which park_slot in src/native/wait.c and notifier_run in
 * src/native/notify.c call).
 *
 * (watch_round's SLOT_RECHECK for a set of links is the same OR-then-wake
 * into a sleeper's word as the hand-over's SLOT_WATCH modelled here, read
 * by the same turn of watch_park: what holds for one holds for the other.)
 *
 * The protocol.  The threads of a process that park on a record register
 * on a process-local list under a process-local lock (a local_lock in the
 * C; an rl::mutex here, with the list and the watcher as plain rl::var
 * fields, so an access outside the lock is a data race).  One of them, the
 * watcher, sleeps with a RECHECK_NS timeout and rechecks everyone each
 * round (watch_round); the others sleep with no timeout.  A slot's word:
 * SLOT_WOKEN (a setter woke it), SLOT_WATCH (the watch was handed to it).
 *   - watch_register: insert at the head; if there is no watcher, the
 *     registering waiter becomes it.
 *   - watch_unregister: unlink; if the leaver is the watcher, the new head
 *     becomes the watcher (NULL if none) under the lock, and is told so by
 *     OR-ing SLOT_WATCH into its word (release) and a futex wake, both
 *     under the lock.
 *   - watch_holds: under the lock, whether the watcher is this waiter.
 *   - watch_park, each turn: read the word (acquire); SLOT_WOKEN -> return;
 *     SLOT_WATCH -> clear it (an atomic AND, release); ask watch_holds; the
 *     watcher sleeps timed, any other waiter futex-waits with expected
 *     value 0 and no timeout -- a hand-over that set SLOT_WATCH makes that
 *     wait return at once (the futex compares the word with 0).
 *
 * Futex (futex.hpp): an untimed sleep that nobody ends is reported as a
 * DEADLOCK.  A timed sleep (the watcher's RECHECK_NS, a caller's deadline)
 * ends by itself.
 *
 * Threads:
 *   0  W: parks with a deadline of its caller (so every sleep of W is
 *      timed); one turn of park_slot, its sleep times out (a round if it
 *      watches), the deadline has passed, it leaves (watch_unregister).
 *   1  T: parks with no timeout and no setter coming.  Turns of park_slot
 *      until it holds the watch; holding it, it sleeps timed, runs
 *      watch_round, and the model lets it leave (its rounds would go on).
 *
 * Promise: after W leaves, while T is still parked, either T holds the
 * watch and sleeps with a timeout (so it will run rounds) or T is awake:
 * never T asleep untimed forever with nobody watching (Relacy: DEADLOCK).
 * Also T holds the watch within TURNS turns (asserted), and after() finds
 * the list empty and no watcher.
 *
 * MODEL_OLD: the code before the fix.  watch_register does not give the
 * watch; the watch is taken, not given: the old watch_holds takes it when
 * nobody holds it (watcher NULL); watch_unregister of the watcher sets it
 * to NULL and only futex-wakes the new head's word, leaving the word 0.
 *
 * Under -DMODEL_OLD this model fails: W takes the watch; T registers and is
 * told it does not hold the watch; W leaves, sets the watcher to NULL and
 * wakes T's word while T is not asleep yet and the word is still 0; T then
 * futex-waits untimed on 0 -- forever, nobody watching: Relacy reports
 * DEADLOCK.
 *
 * Build: g++ -std=c++11 -O1 -o m watch.cpp && ./m             (exit 0)
 *        g++ -std=c++11 -O1 -DMODEL_OLD -o m watch.cpp && ./m  (exit 1)
 */
#include <relacy/relacy.hpp>

#include "futex.hpp"

static const unsigned SLOT_WOKEN = 1u;
static const unsigned SLOT_WATCH = 2u;
static const int NONE = -1;
static const int W = 0, T = 1;
static const unsigned TURNS = 4; /* park_slot turns of T modelled */

struct watch_model : rl::test_suite<watch_model, 2> {
    rl::mutex watch_lock;
    rl::var<int> parked_head;
    rl::var<int> next[2], prev[2];
    rl::var<int> watcher;
    rl::atomic<unsigned> word[2]; /* each waiter's slot word */
    rl::atomic<int> t_watching;   /* T ended its park holding the watch */

    void before()
    {
        parked_head($) = NONE;
        watcher($) = NONE;
        for (int i = 0; i != 2; i++) {
            next[i]($) = NONE;
            prev[i]($) = NONE;
            word[i]($).store(0, rl::mo_relaxed);
        }
        t_watching($).store(0, rl::mo_relaxed);
    }

    void after()
    {
        RL_ASSERT(parked_head($) == NONE);
        RL_ASSERT(watcher($) == NONE);
        RL_ASSERT(t_watching($).load(rl::mo_relaxed) == 1);
    }

    void watch_register(int p)
    {
        watch_lock.lock($);
        prev[p]($) = NONE;
        next[p]($) = parked_head($);
        if (parked_head($) != NONE) prev[parked_head($)]($) = p;
        parked_head($) = p;
#ifndef MODEL_OLD
        if (watcher($) == NONE) watcher($) = p;
#endif
        watch_lock.unlock($);
    }

    void watch_unregister(int p)
    {
        watch_lock.lock($);
        if (prev[p]($) != NONE) next[prev[p]($)]($) = next[p]($);
        else parked_head($) = next[p]($);
        if (next[p]($) != NONE) prev[next[p]($)]($) = prev[p]($);
        if (watcher($) == p) {
#ifndef MODEL_OLD
            /* given, then announced in the holder's word */
            watcher($) = parked_head($);
            if (watcher($) != NONE) {
                word[watcher($)]($).fetch_or(SLOT_WATCH, rl::mo_release);
                futex_wake_all(word[watcher($)]);
            }
#else
            /* the old hand-over: free it, wake the head to take it */
            watcher($) = NONE;
            if (parked_head($) != NONE) futex_wake_all(word[parked_head($)]);
#endif
        }
        watch_lock.unlock($);
    }

    bool watch_holds(int p)
    {
        watch_lock.lock($);
#ifdef MODEL_OLD
        if (watcher($) == NONE) watcher($) = p; /* the old claim: taken if free */
#endif
        bool mine = watcher($) == p;
        watch_lock.unlock($);
        return mine;
    }

    /* the watcher's round: wake a registered waiter woken but asleep (the
     * record_moved half of the rule has no setter to see here) */
    void watch_round()
    {
        watch_lock.lock($);
        for (int p = parked_head($); p != NONE; p = next[p]($)) {
#ifndef MODEL_OLD
            if (word[p]($).load(rl::mo_acquire) & SLOT_WOKEN) futex_wake_all(word[p]);
#else
            if (word[p]($).load(rl::mo_acquire) != 0) futex_wake_all(word[p]);
#endif
        }
        watch_lock.unlock($);
    }

    /* one park_slot turn up to the sleep: -1 woken, else whether it watches */
    int park_turn(int p)
    {
        unsigned w = word[p]($).load(rl::mo_acquire);
#ifndef MODEL_OLD
        if (w & SLOT_WOKEN) return -1;
        if (w & SLOT_WATCH) word[p]($).fetch_and(~SLOT_WATCH, rl::mo_release);
#else
        if (w != 0) return -1;
#endif
        return watch_holds(p) ? 1 : 0;
    }

    void thread_w()
    {
        watch_register(W);
        int watching = park_turn(W);
        if (watching >= 0) {
            /* the caller's deadline: a timed sleep, whether watching or not */
            if (os_wait_word(word[W], 0, TIMED) == TIMED_OUT && watching) watch_round();
            /* the deadline has passed: park_slot returns 0 */
        }
        watch_unregister(W);
    }

    void thread_t()
    {
        watch_register(T);
        unsigned turn;
        for (turn = 0; turn != TURNS; turn++) {
            int watching = park_turn(T);
            RL_ASSERT(watching >= 0); /* nobody sets T's record */
            if (watching) {
                /* the watcher's timed sleep and round; the model stops here */
                if (os_wait_word(word[T], 0, TIMED) == TIMED_OUT) watch_round();
                t_watching($).store(1, rl::mo_relaxed);
                break;
            }
            os_wait_word(word[T], 0, UNTIMED); /* not the watcher */
        }
        RL_ASSERT(turn != TURNS);
        watch_unregister(T);
    }

    void thread(unsigned i)
    {
        if (i == W) thread_w();
        else thread_t();
    }
};

int main() { return run_model<watch_model>("watch"); }
