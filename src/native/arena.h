/*
 * mpevent.shm._native: the shared-memory arena, its parking lot and its value heap.
 *
 * This header owns the layout; each .c file owns one idea, and the files
 * stand on floors: each calls only files on the floors below it (the
 * check in .ci/cited_names.py refuses a call circle), so each can be read
 * knowing only what is under it.
 *
 *   floor  file          the idea                                    calls
 *   -----  ------------  ------------------------------------------  ---------------------
 *   0      os.h/os.c     every call to the operating system: waits   (the kernel)
 *                        and wakes on a shared word, OFD locks,
 *                        mappings, files, populating and punching
 *                        pages, the CPU (a port is this file)
 *   1      local.c       process-local locks (a private futex word)  os
 *   1      spin.c        adaptive spinning before parking, and       os
 *                        handing the CPU over after a wake
 *   1      testpoints.c  named stops for forced interleavings        local, os
 *                        (test builds only)
 *   2      layout.c      the Arena type: mapping, formatting,        os
 *                        validating, reserving pages before they
 *                        are touched, record indices, statistics
 *   3      liveness.c    who is alive: OFD locks the kernel drops    layout, local, os
 *                        when a process dies, the attach table,
 *                        lock owners
 *   4      locks.c       the arena's lock words, owned by a lock     liveness, os
 *                        owner and taken over from a dead one (it
 *                        reports a takeover; the caller repairs)
 *   5      waiters.c     waiter lists: queueing a link on a record,  locks, layout, os
 *                        firing them all; a record's lock, taken
 *                        and repaired (lock_record)
 *   6      slots.c       waiter slots and links: allocating,         waiters, locks, layout
 *                        freeing, reclaiming
 *   6      spill.c       values in files of the spill directory      waiters, locks, os
 *   7      heap.c        the value heap: small blocks, large         spill, locks, local,
 *                        blocks, zero-copy views                     layout, os
 *   8      records.c     records: allocation, reference counts,      heap, spill, waiters,
 *                        held bitmaps, the state word (set/clear/    spin, locks, local,
 *                        is_set) and value slots                     layout, os
 *   9      claims.c      promised (claimed) results, and the one     records, waiters,
 *                        rule for a wakeup never sent (a moved       liveness, locks, layout
 *                        generation, a dead claimer)
 *   10     wait.c        every sleep of a slot and the one watch     claims, slots, waiters,
 *                        over them (a parked thread per process      spin, locks, local,
 *                        re-checks the others); wait(), wait_any(),  layout, os
 *                        park(), the Watchlist type
 *   11     notify.c      a C thread that turns a slot's wakeups      wait, claims, waiters,
 *                        into eventfd writes, for event loops        local, layout, os
 *   11     testing.c     the test surface: every entry point only    waiters, layout,
 *                        tests call (testing_*)                      testpoints
 *   11     handle.c      the Handle types: a record's reference in   wait, records, layout
 *                        a Python object, and the whole wait in C
 *                        when nothing needs Python
 *   12     module.c      the module: the tables of methods and       everything
 *                        functions, constants, initialization
 *
 * Why C: the hot paths (wait on one record, set, clear) must cost about as
 * much as a bare semaphore round trip.  Done from Python with ctypes they
 * take ten foreign calls (~0.8 us each) per side; here they are one call
 * each, and the GIL is released only around the sleep.
 *
 * Why these pieces:
 *   - A record's guard is a 32-bit lock word naming its holder's lock
 *     owner (locks.c).  A waiter that finds the owner dead -- its OFD lock
 *     gone, the kernel's word for it -- takes the lock over, so a
 *     SIGKILLed process can never leave a record locked.  No libc type is
 *     in shared memory: the bytes are the same on every CPU and libc.
 *   - Waiters sleep on a futex word of their own *slot* (one slot per
 *     waiting thread, not per record), so a thread can wait on many records
 *     at once (the hub, mpevent.wait) and records cost no kernel object.
 *   - A record's state is one 32-bit word: bit 0 is the flag, bits 1..31 a
 *     generation bumped by every set().  One aligned store publishes both,
 *     so a crash leaves either the old or the new state, never half; a
 *     waiter returns True when the generation moved, even if clear() has
 *     already reset the flag (CPython's test_set_and_clear).
 *   - set() dequeues every waiter it wakes (as trio's ParkingLot.unpark
 *     does), so a waiter that died while parked costs the next set() one
 *     futex wake and is then gone.
 *   - A parked waiter sleeps with no timer unless its caller gave a
 *     timeout.  One parked thread per process keeps a one-second watch for
 *     waiters whose setter was killed after publishing the state but before
 *     waking them (wait.c), so they still return within about a second.
 *   - Every page is *reserved* (MADV_POPULATE_WRITE, which fails with an
 *     error where a plain store would raise SIGBUS) before it is first
 *     touched: records, slots and links as their regions grow, held bitmaps
 *     page by page, heap blocks before a value is copied in.  A full
 *     /dev/shm (or the MPEVENT_MAX_SHM cap) is a MemoryError, never a bus
 *     error, and a failed reservation gives back what it got.
 *   - No Python object that the garbage collector tracks is created while
 *     a lock is held: a collection could run a finalizer that releases a
 *     record and needs that same lock.  Errors found under a lock are
 *     raised after unlocking.
 *
 * Layout of a segment (all integers native-endian, little-endian on every
 * CPU we build for; offsets in bytes; regions start on a page boundary of
 * the page size the arena was made with, Header.page_size):
 *
 *   | offset         | size                | what                             |
 *   |----------------|---------------------|----------------------------------|
 *   | 0              | sizeof(Header)      | Header (below)                   |
 *   | ATTACH_OFFSET  | ATTACH_ENTRIES*16   | attach table: AttachEntry[]      |
 *   | OWNERS_OFFSET  | LOCK_OWNERS*8       | lock owners: LockOwner[]         |
 *   | slots_offset   | slot_capacity*32    | Slot[]                           |
 *   | links_offset   | link_capacity*32    | Link[]; link i < slot_capacity   |
 *   |                |                     | is slot i's own link             |
 *   | records_offset | record_capacity*128 | Record[]                         |
 *   | small_offset   | small_capacity      | small value blocks, 64 B..64 KiB |
 *   | held_offset    | ATTACH_ENTRIES *    | per attached process: a bit per  |
 *   |                |   held_stride       | record it holds a reference to   |
 *   | large_offset   | large_capacity      | large value blocks (LargeBlock), |
 *   |                |                     | page aligned, sparse             |
 *
 * The file is sparse: only reserved pages cost memory.  Index fields that
 * point into a list hold index+1 so that 0 means "none".
 *
 * Who holds a record: its refcount counts processes (plus pickles in flight
 * and names), and each process also sets its bit in the held bitmap of its
 * attach-table entry.  The count goes up before the bit is set and down
 * after it is cleared, so a process dying in between can only leak a
 * reference, never give one back twice.  When a process is found dead, the
 * one that finds it releases every record whose bit it had set.
 *
 * Lock order (take them in this order, never the reverse):
 *
 *   1. a record's lock (Record.lock; one at a time)
 *   2. the arena lock (Header.lock)
 *   3. OFD locks on the segment file (liveness.c), only ever taken
 *      non-blocking while 1 or 2 is held (a lock owner's byte is taken
 *      before any lock of ours, and kept)
 *   process-local, innermost: the watch lock (wait.c, a local_lock),
 *   which is held around nothing but its own list and futex wakes; the
 *   process lock (ArenaObject.process_lock), held around one liveness
 *   question (an fcntl) or one pin; the test points' lock (testpoints.c).
 *   Python's GIL is released around every sleep on a lock word (locks.c),
 *   so a holder that needs the GIL can finish.
 *
 * Shared fields: who writes them, under which lock, how readers load them.
 * Every access outside the field's lock goes through a named atomic of
 * atomics.h (.ci/cited_names.py refuses a GCC builtin used bare), and each
 * protocol below is model-checked in src/native/models/ (.ci/models).
 *
 *   | field                  | written by, under            | readers load        |
 *   |------------------------|------------------------------|---------------------|
 *   | Header.magic           | the creator, once, last      | acquire             |
 *   | Header allocation,     | anyone, arena lock (bumps:   | under the arena     |
 *   |   free lists, bumps    |   release stores)            | lock (bumps: acq.)  |
 *   | Header.shm_reserved    | anyone, atomic add/sub       | relaxed             |
 *   | Header.unlinked        | a leaver or cleaner holding  | acquire             |
 *   |                        |   the whole table's OFD lock |                     |
 *   | AttachEntry.state,     | arena lock (release store)   | acquire             |
 *   |   epoch                |                              |                     |
 *   | AttachEntry.held_      | its process, arena lock      | acquire             |
 *   |   reserved             |   (release store)            |                     |
 *   | held bitmap words      | its process, atomic or/and   | acquire             |
 *   | Record.lock, Header.   | its taker, CAS 0 -> label    | relaxed + CAS       |
 *   |   lock (locks.c)       |   (acquire); its holder,     |   (acquire)         |
 *   |                        |   CAS label -> 0 (release);  |                     |
 *   |                        |   a sleeper ORs LOCK_WAITERS |                     |
 *   | LockOwner.epoch        | the holder of the owner's    | acquire             |
 *   |                        |   byte, atomic add, once     |                     |
 *   | Header.page_size       | the creator, before magic    | after magic         |
 *   | Record.state           | set(): record lock, release  | acquire, always:    |
 *   |                        |   store; clear(): atomic and |   clear() takes no  |
 *   |                        |   without the lock           |   lock, so even a   |
 *   |                        |                              |   locked read races |
 *   | Record.waiters,        | record lock                  | under the record    |
 *   |   Link.next, record,   |   (record, fired: atomic     |   lock (fired:      |
 *   |   fired                |   stores)                    |   acquire, no lock) |
 *   | Link.slot              | arena lock, when the link is | under either lock   |
 *   |                        |   allocated; fixed until     |   (relaxed)         |
 *   |                        |   given back                 |                     |
 *   | Link.flags             | QUEUED: record lock; OWNED:  | OWNED: under the    |
 *   |                        |   arena lock; atomic stores  |   arena lock; QUEUED|
 *   |                        |                              |   acquire           |
 *   | ValueSlot.tag          | record lock, release store   | acquire (holds(),   |
 *   |                        |   after the rest of the slot |   lock-free)        |
 *   | Record.refcount,       | record lock (record_alloc    | under the record    |
 *   |   inflight, kind,      |   too, kind last)            |   lock              |
 *   |   serial               |                              |                     |
 *   | Record.claim,          | record lock (claim_epoch     | acquire, lock-free  |
 *   |   claim_epoch          |   relaxed, then claim        |   (a hint: judged   |
 *   |                        |   release)                   |   again under the   |
 *   |                        |                              |   lock before use)  |
 *   | Slot.word              | a setter, record lock, OR    | acquire (futex)     |
 *   |                        |   SLOT_WOKEN; the watch lock |                     |
 *   |                        |   holder, OR SLOT_WATCH; the |                     |
 *   |                        |   owner, exchange to 0       |                     |
 *   | Slot.in_use, owner,    | arena lock (atomic stores)   | acquire / relaxed   |
 *   |   owner_epoch          |                              |                     |
 *   | Record.setter_cpu,     | set() / spinners, relaxed    | relaxed (a stale    |
 *   |   spin_misses          |   stores; hints that order   |   value only        |
 *   |                        |   nothing                    |   misjudges one     |
 *   |                        |                              |   spin)             |
 *   | Header.spin_seats[]    | spinners, CAS (acq_rel) in,  | relaxed + CAS       |
 *   |                        |   release store out          |                     |
 *   | LargeBlock.state, refs,| atomic CAS / add (heap.c);   | acquire             |
 *   |   pins[]               |   a writer's entry is in the |                     |
 *   |                        |   state: BLOCK_WRITING_BY    |                     |
 *   | Header.reserve_stamp   | anyone, relaxed store        | relaxed (a clock)   |
 *
 * A record's payload holds two ValueSlots (AsyncResult's value and its
 * exception), each a descriptor of a pickled form that lives inline (up to
 * 16 bytes), in a small block (a plain pickle up to 64 KiB), or in a large
 * block (anything bigger, or with out-of-band buffers).  See heap.c.
 */
#ifndef MPEVENT_ARENA_H
#define MPEVENT_ARENA_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>

#include "atomics.h"
#include "os.h"

#define MAGIC 0x31544e4556504d00ULL /* "\0MPEVNT1" */
#define LAYOUT_VERSION 13u
#define RECORD_SIZE 128u
#define PAYLOAD_SIZE 48u
#define ATTACH_OFFSET 4096u
#define ATTACH_ENTRIES 1024u
#define ATTACH_ENTRY_SIZE 16u
#define OWNERS_OFFSET (ATTACH_OFFSET + ATTACH_ENTRIES * ATTACH_ENTRY_SIZE)
#define OWNERS_END (OWNERS_OFFSET + LOCK_OWNERS * 8u)
#define RESERVE_CHUNK (64u * 1024u) /* regions grow by this much at a time */
#define WAKE_BATCH 64
#define SPIN_SEATS 8   /* most waiters of one arena spinning at once (spin.c) */
#define SPIN_LIMIT_MAX 100000000 /* the largest MPEVENT_SPIN: seconds of pauses */
#define LOCK_SPINS 200 /* attempts before sleeping on a busy lock word (locks.c) */
/* Lock words (locks.c): a label, and a bit for sleepers. */
#define LOCK_OWNERS ATTACH_ENTRIES /* lock owners of an arena: one per process mapping it */
#define LOCK_OWNER_BITS 11u        /* owner index + 1: 1..LOCK_OWNERS */
#define LOCK_EPOCH_MASK 0xfffffu   /* the owner's epoch, its low 20 bits */
#define LOCK_LABEL(owner, epoch) \
    ((((epoch) & LOCK_EPOCH_MASK) << LOCK_OWNER_BITS) | ((uint32_t)(owner) + 1u))
#define LOCK_OWNER_OF(label) (((label) & ((1u << LOCK_OWNER_BITS) - 1u)) - 1u)
#define LOCK_EPOCH_OF(label) (((label) >> LOCK_OWNER_BITS) & LOCK_EPOCH_MASK)
#define LOCK_ANONYMOUS ((1u << LOCK_OWNER_BITS) - 1u) /* no owner: never taken over */
#define LOCK_WAITERS 0x80000000u
/* A sleeper on a busy lock asks this often whether its holder lives. */
#define LOCK_CHECK_NS 50000000LL
/* A lock owner's liveness is the OFD lock on this byte of the segment file
 * (after the attach entries' bytes, so a "whole table" lock leaves them be). */
#define OWNER_BYTE(owner) ((long long)ATTACH_ENTRIES + (owner))
/* How long a sleeper goes before re-reading what it waits on, for wakeups a
 * killed setter never sent (the watch in wait.c; multi-waits and hubs
 * read it as _native.RECHECK_MS). */
#define RECHECK_NS 1000000000LL

#define SMALL_MIN_SHIFT 6
#define SMALL_CLASSES 11
#define SMALL_MAX (1u << (SMALL_MIN_SHIFT + SMALL_CLASSES - 1)) /* 64 KiB */

/* Large classes: four per power of two from 64 KiB (at most 25% of the
 * address range wasted; pages past the value are never reserved). */
#define LARGE_MIN_SHIFT 16
#define LARGE_STEPS 4
#define LARGE_CLASSES (1 + LARGE_STEPS * (48 - LARGE_MIN_SHIFT))
/* The page size of this process (os_page_size, read at import); an arena
 * made with another one is refused (validate). */
extern uint64_t page_size;
#define BLOCK_HEADER page_size /* a large block's data starts one page in */

#define VALUE_NONE 0u
#define VALUE_INLINE 1u
#define VALUE_SMALL 2u
#define VALUE_LARGE 3u
#define VALUE_SPILLED 4u /* in a file of the spill directory (spill.c) */
#define VALUE_PICKLE 5u  /* a plain pickle too large for a small block, in a large block */
#define VALUE_FAILED 6u  /* the claimer ended unset: its pid and how (where.failure) */
/* Tags whose value is a large block of the heap (heap.c). */
#define VALUE_IN_BLOCK(tag) ((tag) == VALUE_LARGE || (tag) == VALUE_PICKLE)
#define VALUE_INLINE_MAX 16u
#define SPILL_DIR_MAX 256u
#define SPILL_NAME_MAX 64u

#define STATE_FLAG 1u
#define GENERATION(state) ((state) >> 1)

#define KIND_FREE 0u

#define LINK_QUEUED 1u
#define LINK_OWNED 2u /* an extra link, allocated by link_alloc for l->slot */

typedef struct {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t record_size;
    uint32_t record_capacity;
    uint32_t slot_capacity;
    uint32_t link_capacity;
    uint32_t record_bump;  /* records [0, bump) have been initialised */
    uint32_t record_free;  /* free list head, index+1 */
    uint32_t records_live;
    uint32_t slot_bump;
    uint32_t slot_free;
    uint32_t slots_live;
    uint32_t link_bump;
    uint32_t link_free;
    uint32_t links_live;
    uint32_t serial;       /* bumped by every record allocation */
    uint32_t recoveries;   /* locks taken over from dead holders */
    uint64_t slots_offset;
    uint64_t links_offset;
    uint64_t records_offset;
    uint64_t small_offset;
    uint64_t small_capacity;
    uint64_t held_offset;
    uint64_t held_stride;        /* bytes of one entry's bitmap, page aligned */
    uint64_t large_offset;
    uint64_t large_capacity;
    uint64_t total_size;
    /* reservations: bytes from the start of each region that are backed */
    uint64_t records_reserved;
    uint64_t slots_reserved;     /* covers the slots and their own links */
    uint64_t links_reserved;     /* extra links, from link index slot_capacity */
    uint64_t small_reserved;
    uint64_t shm_reserved;       /* every reserved byte counted against shm_cap */
    uint64_t shm_cap;            /* MPEVENT_MAX_SHM of the creator; 0 = none */
    uint64_t free_watermark;     /* free large-block bytes kept resident */
    /* small heap */
    uint64_t small_bump;
    uint64_t small_used;
    uint64_t small_free[SMALL_CLASSES]; /* free block offsets, 0 = none */
    /* large heap (heap.c) */
    uint64_t large_bump;         /* bytes of the large region carved into blocks */
    uint64_t large_used;         /* class bytes of blocks not free */
    uint64_t large_resident;     /* reserved bytes of all large blocks */
    uint64_t large_free_resident;/* reserved bytes of free large blocks */
    uint64_t large_given_back;   /* bytes ever punched out of free blocks */
    uint64_t large_free[LARGE_CLASSES]; /* free blocks with data pages reserved (warm) */
    uint64_t reserve_bytes;      /* data bytes of free BLOCK_RESERVE blocks (heap.c) */
    int64_t reserve_stamp;       /* CLOCK_MONOTONIC ns of the last refill */
    uint32_t unlinked;     /* 1 once the segment's name is gone: nobody may join */
    uint32_t probe_cursor; /* next attach entry the bounded liveness probe looks at */
    uint32_t lock;         /* guards allocation and the attach table (locks.c) */
    uint32_t page_size;    /* the creator's page size: every region is aligned to it */
    /* spilling (spill.c): set once by the creator; "" = off */
    char spill_dir[SPILL_DIR_MAX];   /* where values that shared memory cannot hold go */
    char spill_name[SPILL_NAME_MAX]; /* the arena's name: files are <name>-<token>.spill */
    uint64_t spilled_values;         /* published spilled values (atomic add/sub) */
    uint64_t spilled_bytes;
    uint64_t spill_errors;           /* spill files that could not be unlinked */
    /* spinning (spin.c): a waiter spins only in a free seat; a seat
     * holds the CLOCK_MONOTONIC ns at which its spinner must have left,
     * so a spinner killed in its seat frees it by the clock alone. */
    int64_t spin_seats[SPIN_SEATS];
    /* free large blocks whose data pages were given back (heap.c): a take
     * pops one only when its class has no warm block */
    uint64_t large_cold[LARGE_CLASSES];
} Header;

/*
 * One attach-table entry per attached process.  Liveness is not in here:
 * it is the kernel's OFD lock on byte `entry` of the segment file
 * (liveness.c), held by the attached process for as long as it lives.
 */
#define ENTRY_FREE 0u
#define ENTRY_ATTACHED 1u
#define ENTRY_RECLAIMING 2u /* its process died; the holder of byte `entry` reclaims it */

typedef struct {
    uint32_t state;         /* ENTRY_*; written under the arena lock, read acquire */
    uint32_t held_reserved; /* bytes of its held bitmap reserved (records.c) */
    uint32_t epoch;         /* bumped by every join: tells a reused entry apart */
    uint32_t pid;           /* display only: a pid in the joiner's own namespace */
} AttachEntry;

/*
 * One lock owner per process mapping the arena (liveness.c).  Its
 * liveness is the OFD lock on byte OWNER_BYTE(owner) of the file; its
 * epoch, bumped by each process that takes the byte, tells a label of the
 * dead apart from one of the byte's next holder.
 */
typedef struct {
    uint32_t epoch;
    uint32_t pid; /* display only */
} LockOwner;

/* Slot.word, the futex a waiting thread sleeps on: */
#define SLOT_WOKEN 1u /* a setter fired one of its links (or a stop: Arena_wake) */
#define SLOT_WATCH 2u /* the watch was handed to it (wait.c) */
#define SLOT_RECHECK 4u /* the watch found a record of its set moved by the one rule */

typedef struct {
    uint32_t word;      /* futex: 0 parked, else SLOT_WOKEN | SLOT_WATCH bits */
    uint32_t in_use;
    uint32_t owner;     /* attach entry + 1 of the process whose thread owns it */
    uint32_t next_free; /* index+1 */
    uint32_t owner_epoch; /* that entry's epoch: a reused entry is another owner */
    uint32_t loop;      /* nonzero: an event loop's slot, woken by a datagram (notify.c) */
    uint32_t pad[2];
} Slot;

typedef struct {
    uint32_t next;      /* next link in the record's waiter list, index+1 */
    uint32_t slot;
    uint32_t record;
    uint32_t flags;     /* LINK_QUEUED while in a waiter list, LINK_OWNED */
    uint32_t fired;     /* set to 1 by the setter that dequeued it */
    uint32_t next_free; /* index+1 */
    uint32_t pad[2];
} Link;

typedef struct {
    uint32_t lock;      /* a lock word (locks.c) */
    uint32_t state;     /* generation << 1 | flag */
    uint32_t waiters;   /* head of the waiter list, link index+1 */
    uint32_t refcount;  /* processes holding it + pickles in flight */
    uint32_t inflight;  /* pickles not yet unpickled */
    uint8_t kind;        /* KIND_FREE or the kind given at allocation (< 256) */
    uint8_t spin_misses; /* spins on it in a row that saw no set (spin.c); a hint */
    uint16_t setter_cpu; /* CPU + 1 the last set() ran on (0: none yet); a hint for spinning */
    uint32_t serial;    /* allocation serial: stale handles do not match */
    uint32_t next_free; /* index+1 */
    uint32_t claim;       /* CLAIM_*: who promised to set it (liveness.c) */
    uint32_t claim_epoch; /* the claimer's attach-entry epoch */
    uint32_t claim_pid;   /* display only: the claimer's pid in its namespace */
    uint32_t pad;         /* the payload's ValueSlots start 8-byte aligned */
    unsigned char payload[PAYLOAD_SIZE];
} Record;

/* Record.claim: attach entry + 1 in the low bits, and how a claim ended. */
#define CLAIM_ENTRY(claim) ((claim) & 0xffffu)
#define CLAIM_DEAD 0x40000000u   /* the claimer ended without setting it */
#define CLAIM_EXITED 0x20000000u /* ... and it ran its exit handlers (not killed) */

typedef struct {
    uint8_t tag;        /* VALUE_*: how and where the value is stored */
    uint8_t pad[3];
    uint32_t length;    /* bytes of the stored form (large: see the block) */
    union {
        uint8_t bytes[VALUE_INLINE_MAX];
        uint64_t location; /* block offset in the segment */
        struct {
            uint64_t token; /* names the file: <spill_name>-<token>.spill */
            uint64_t inode; /* which file that must be (a replaced one is refused) */
        } spill;
        struct {
            uint32_t pid;    /* the claimer, in its PID namespace */
            uint32_t exited; /* 1: it exited normally; 0: it was killed */
        } failure;
    } where;
} ValueSlot;

#define BLOCK_FREE 0u
#define BLOCK_WRITING 1u /* allocated, being written, not yet published: with its writer */
#define BLOCK_LIVE 2u    /* published in a value slot, or still viewed */
#define BLOCK_FREEING 3u /* being freed by whoever won it */
/* A block being written names its writer's attach entry in the same word,
 * so "still WRITING, and by this writer" is one CAS (heap.c). */
#define BLOCK_STATE(word) ((word) & 0xffu)
#define BLOCK_WRITING_BY(entry) (BLOCK_WRITING | (((uint32_t)(entry) + 1u) << 8))
#define BLOCK_RESERVE 1u /* free, faulted in ahead for the next value: counted in reserve_bytes */
#define BLOCK_REFILL 2u  /* allocated with fresh pages: publishing it refills the reserve */

/* The header page of a large block (heap.c has the life of a block). */
typedef struct {
    uint32_t state;     /* BLOCK_FREE, BLOCK_WRITING_BY(entry), BLOCK_LIVE, BLOCK_FREEING */
    uint32_t cls;
    uint64_t size;      /* class bytes, header page included */
    uint64_t resident;  /* bytes from the block's start that are reserved */
    uint64_t next_free; /* next free block of the class, offset; 0 = none */
    uint64_t length;    /* bytes of data */
    uint32_t unused;    /* was the writer's entry: now in the state word */
    uint32_t refs;      /* 1 for the value slot holding it + reader pins */
    uint32_t flags;     /* BLOCK_RESERVE, BLOCK_REFILL (heap.c, "the reserve") */
    uint32_t pad;
    uint16_t pins[ATTACH_ENTRIES]; /* reader pins per attached process */
} LargeBlock;

_Static_assert(sizeof(ValueSlot) * 2 == PAYLOAD_SIZE, "ValueSlot layout");
_Static_assert(sizeof(Slot) == 32, "Slot layout");
_Static_assert(sizeof(AttachEntry) == ATTACH_ENTRY_SIZE, "AttachEntry layout");
_Static_assert(ATTACH_ENTRIES < 0xffffu, "claims hold an entry in 16 bits");
_Static_assert(sizeof(Link) == 32, "Link layout");
_Static_assert(sizeof(Record) <= RECORD_SIZE, "Record layout");
/* The bytes of an arena are the same on every target we build (x86-64 and
 * aarch64, glibc and musl): only fixed-width fields, and these pins. */
_Static_assert(sizeof(Record) == 96 && offsetof(Record, state) == 4 &&
                   offsetof(Record, kind) == 20 && offsetof(Record, claim) == 32 &&
                   offsetof(Record, payload) == 48,
               "Record layout differs on this target");
_Static_assert(sizeof(Header) == 2856 && offsetof(Header, large_free) == 352 &&
                   offsetof(Header, lock) == 1408 && offsetof(Header, page_size) == 1412 &&
                   offsetof(Header, spin_seats) == 1760 && offsetof(Header, large_cold) == 1824,
               "Header layout differs on this target");
_Static_assert(sizeof(ValueSlot) == 24 && offsetof(ValueSlot, where) == 8,
               "ValueSlot layout differs on this target");
_Static_assert(sizeof(LargeBlock) == 2104 && offsetof(LargeBlock, pins) == 56,
               "LargeBlock layout differs on this target");
_Static_assert(sizeof(Header) <= ATTACH_OFFSET, "Header layout");
_Static_assert(sizeof(LargeBlock) <= 4096, "LargeBlock fits the smallest page");
_Static_assert(sizeof(LockOwner) == 8, "LockOwner layout");

/*
 * The module's state: one per interpreter that imports the module (each
 * has its own types, exception and hooks; layout.c makes it).  What the C
 * code shares between interpreters is process-wide by nature and holds
 * no Python object: the page size, the spin settings (spin.c), the watch
 * (wait.c) and the lock-fault count, each behind an atomic or a lock.
 */
typedef struct BlockViewObject BlockViewObject;
typedef struct {
    PyObject *full_error; /* _native.Full */
    PyTypeObject *arena_type, *handle_type, *event_handle_type, *view_type, *notifier_type,
        *watchlist_type;
    PyObject *wait_path; /* set_hooks(): Linkable._wait_ready */
    PyObject *gevent_name; /* "gevent": in sys.modules, a wait may be a greenlet's */
    /* This interpreter's live block views (heap.c), under views_lock (a
     * local_lock: threads of a free-threaded build make and drop views
     * at once). */
    uint32_t views_lock;
    BlockViewObject *live_views;
} NativeState;

typedef struct {
    PyObject_HEAD
    /* The state of the module that made this arena's type: it outlives
     * the arena (an object holds its heap type, the type its module). */
    NativeState *state;
    Py_ssize_t size;
    char *base;
    Header *header;
    Slot *slots;
    Link *links;
    char *records;
    /* This process's view of its own held bitmap (see records.c). */
    long held_entry;
    uint64_t held_reserved;
    /* Set once this process has left: its reader pins were given back. */
    int pins_forgotten;
    /* This process's descriptor of the segment (its own open file
     * description): it holds the OFD lock on byte held_entry. -1: none. */
    int live_fd;
    uint32_t held_epoch;
    /* This process's lock owner: the label its lock words carry (0: none
     * yet), and the descriptor whose OFD lock holds the owner's byte. */
    uint32_t lock_label;
    int owner_fd;
    /* The process lock (a local_lock, innermost): held while live_fd or
     * owner_fd is used or changed (forget_descriptors must not close a
     * number a liveness question is using), and while pins_forgotten is
     * read with the pin or unpin it decides (heap_forget).  held_entry,
     * held_epoch and lock_label change only under it too, and are read
     * anywhere with load_relaxed. */
    uint32_t process_lock;
    /* Which arena object this is, among all this process has made (never
     * reused, unlike its address): the key of a thread's cached slot. */
    uint64_t instance;
} ArenaObject;

/* --- shared by the files ------------------------------------------- */

/* The pause instruction of a spin loop: lets the sibling hyperthread run
 * and saves power while a cache line is awaited. */
static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline Record *
record_at(ArenaObject *a, uint32_t index)
{
    return (Record *)(a->records + (size_t)index * RECORD_SIZE);
}

static inline uint64_t
page_align(uint64_t offset)
{
    return (offset + page_size - 1) & ~(page_size - 1);
}

/* No lock: one atomic AND.  set() writes the state (under the lock) only
 * when it read the flag down, when this AND changes nothing; and a waiter
 * that read the flag up before it returns True, as it may. */
static inline void
record_clear(Record *r)
{
    fetch_and_acq_rel(&r->state, ~STATE_FLAG);
}

/* layout.c */
ArenaObject *arena_argument(PyObject *obj, const char *who);
int check_record(ArenaObject *a, unsigned long index);
Record *parse_record(ArenaObject *self, PyObject *arg);
int Arena_init(ArenaObject *self, PyObject *args, PyObject *kwds);
void Arena_dealloc(ArenaObject *self);
int Arena_getbuffer(ArenaObject *self, Py_buffer *view, int flags);
PyObject *Arena_format(ArenaObject *self, PyObject *args);
PyObject *Arena_validate(ArenaObject *self, PyObject *ignored);
PyObject *Arena_statistics(ArenaObject *self, PyObject *ignored);
PyObject *native_segment_size(PyObject *module, PyObject *args);
PyObject *native_segment_kind(PyObject *module, PyObject *arg);
#define RESERVE_FULL 1 /* /dev/shm has no room */
#define RESERVE_CAP 2  /* MPEVENT_MAX_SHM reached */
#define REGION_FULL 3  /* a region of the arena (small blocks, large blocks) has no room */

/*
 * "Full", one way: a table of the arena that cannot take one more row
 * (records, waiter slots, links, attach entries) raises _native.Full, a
 * MemoryError (the caller may make room -- reclaim the dead, open another
 * arena -- and try again); shared memory that cannot be had raises a plain
 * MemoryError naming /dev/shm or the cap.  Inside C, allocators report
 * through an int code (RESERVE_*, REGION_FULL), never a bare 0.
 */
int reserve_range(ArenaObject *a, uint64_t offset, uint64_t length);
void unreserve_range(ArenaObject *a, uint64_t offset, uint64_t length);
void raise_reserve_error(ArenaObject *a, int error, uint64_t length, const char *what);
int grow_region(ArenaObject *a, uint64_t region, uint64_t *reserved, uint64_t needed,
                uint64_t capacity);
int append_new(PyObject *list, PyObject *item);

/* local.c */
void local_lock(uint32_t *word);
void local_unlock(uint32_t *word);

/* locks.c */
int lock_word(ArenaObject *a, uint32_t *word);
void unlock_word(ArenaObject *a, uint32_t *word);
void note_lock_fault(int rc);
unsigned long lock_fault_count(void);
PyObject *Arena_lock(ArenaObject *self, PyObject *ignored);
PyObject *Arena_unlock(ArenaObject *self, PyObject *ignored);

/* waiters.c */
void lock_record(ArenaObject *a, Record *r);
void futex_wake_all(uint32_t *word);
int check_slot(ArenaObject *a, unsigned long slot);
int parse_slot(ArenaObject *a, PyObject *arg, unsigned long *slot);
void enqueue_link(ArenaObject *a, Record *r, uint32_t record, uint32_t link);
int remove_link(ArenaObject *a, Record *r, uint32_t link);
void wake_fired(ArenaObject *a, Record *r, uint32_t *wake, int *nwake);
void wake_slots(ArenaObject *a, const uint32_t *wake, int n);
int woken_elsewhere(ArenaObject *a, const uint32_t *wake, int n);
void note_setter(Record *r);
PyObject *Arena_enqueue(ArenaObject *self, PyObject *args);
PyObject *Arena_dequeue(ArenaObject *self, PyObject *args);
PyObject *Arena_fired(ArenaObject *self, PyObject *arg);
PyObject *Arena_fired_among(ArenaObject *self, PyObject *links);

/* slots.c */
int link_take(ArenaObject *a, uint32_t slot, uint32_t *link);
PyObject *Arena_slot_alloc(ArenaObject *self, PyObject *args);
PyObject *Arena_slot_free(ArenaObject *self, PyObject *arg);
PyObject *Arena_slot_owners(ArenaObject *self, PyObject *ignored);
PyObject *Arena_slot_reclaim(ArenaObject *self, PyObject *args);
PyObject *Arena_link_alloc(ArenaObject *self, PyObject *arg);
PyObject *Arena_link_free(ArenaObject *self, PyObject *arg);

/* wait.c, the watch: what a parked slot waits on, as the watch sees it: one record
 * (a single wait), or a set of links (a multi-wait, a parking lot) */
typedef struct {
    uint32_t link, index, generation;
} Watched;
typedef struct {
    uint32_t lock; /* a local_lock over items and count */
    Watched *items;
    size_t count, capacity;
} WatchSet;
typedef struct Parked {
    ArenaObject *arena;
    Slot *slot;
    Record *record;      /* one record, at generation, or NULL */
    uint32_t generation;
    WatchSet *set;       /* or these links' records, or NULL */
    int wake_when_empty; /* a lot's: an empty set is woken too (its driver retires idle) */
    struct Parked *prev, *next;
} Parked;
void watch_init(void);
void watch_register(Parked *p);
void watch_unregister(Parked *p);
int watch_park(Parked *p, long long deadline);
int watch_set_add(WatchSet *set, uint32_t link, uint32_t index, uint32_t generation);
void watch_set_remove(WatchSet *set, uint32_t link);
extern PyType_Spec WatchlistSpec;
typedef struct {
    PyObject_HEAD
    ArenaObject *arena;
    WatchSet set;
} WatchlistObject;

/* spin.c */
extern int spin_limit;
extern int spin_seats_usable;
extern __thread int spin_woke_sleeper;
void spin_init(void);
int spin_for_flag(ArenaObject *self, Record *r);
void handover_after_wake(int woken);
PyObject *native_set_handover(PyObject *module, PyObject *arg);
PyObject *native_set_spin_limit(PyObject *module, PyObject *arg);
PyObject *native_spin_stats(PyObject *module, PyObject *ignored);
PyObject *Arena_spinners(ArenaObject *self, PyObject *ignored);

/* claims.c */
int record_moved(ArenaObject *a, Record *r, uint32_t generation);
int record_recheck(ArenaObject *a, Record *r, uint32_t generation);
int claim_lost(ArenaObject *a, Record *r);
int record_fail_claim(ArenaObject *self, Record *r, uint32_t how);
PyObject *Arena_claim(ArenaObject *self, PyObject *arg);
PyObject *Arena_claim_abandon(ArenaObject *self, PyObject *arg);

/* wait.c */
int parse_timeout(PyObject *arg, double *timeout);
PyObject *Arena_wait_any(ArenaObject *self, PyObject *args);
PyObject *Arena_recheck(ArenaObject *self, PyObject *args);
PyObject *Arena_park(ArenaObject *self, PyObject *args);
PyObject *Arena_reset(ArenaObject *self, PyObject *arg);
PyObject *Arena_wake(ArenaObject *self, PyObject *arg);
PyObject *Arena_wait(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs);
long thread_slot(ArenaObject *self);
PyObject *record_wait(ArenaObject *self, Record *r, long slot, double timeout);

/* records.c */
PyObject *Arena_held_mark(ArenaObject *self, PyObject *args);
PyObject *Arena_held_wipe(ArenaObject *self, PyObject *arg);
PyObject *Arena_held_release_all(ArenaObject *self, PyObject *arg);
PyObject *Arena_held_share(ArenaObject *self, PyObject *args);
PyObject *Arena_adopt_entry(ArenaObject *self, PyObject *arg);
PyObject *Arena_record_alloc(ArenaObject *self, PyObject *args);
PyObject *Arena_record_retain(ArenaObject *self, PyObject *args);
PyObject *Arena_record_pin(ArenaObject *self, PyObject *args);
PyObject *Arena_record_release(ArenaObject *self, PyObject *args);
PyObject *Arena_record_give_back(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Arena_record_info(ArenaObject *self, PyObject *args);
PyObject *Arena_lock_word(ArenaObject *self, PyObject *arg);
PyObject *Arena_is_set(ArenaObject *self, PyObject *arg);
PyObject *Arena_state(ArenaObject *self, PyObject *arg);
PyObject *Arena_set(ArenaObject *self, PyObject *arg);
int record_set(ArenaObject *self, Record *r);
void record_publish_value(ArenaObject *self, Record *r, int which, const ValueSlot *incoming);
PyObject *Arena_clear(ArenaObject *self, PyObject *arg);
PyObject *Arena_store(ArenaObject *self, PyObject *args);
PyObject *Arena_publish_spill(ArenaObject *self, PyObject *args);
PyObject *Arena_load(ArenaObject *self, PyObject *args);
PyObject *Arena_holds(ArenaObject *self, PyObject *args);

/* liveness.c */
static inline AttachEntry *
entry_at(ArenaObject *a, uint32_t entry)
{
    return (AttachEntry *)(a->base + ATTACH_OFFSET) + entry;
}
int entry_alive(ArenaObject *a, uint32_t entry, uint32_t epoch);
static inline LockOwner *
owner_at(ArenaObject *a, uint32_t owner)
{
    return (LockOwner *)(a->base + OWNERS_OFFSET) + owner;
}
int owner_alive(ArenaObject *a, uint32_t label);
PyObject *Arena_owner_reserve(ArenaObject *self, PyObject *arg);
PyObject *Arena_owner_adopt(ArenaObject *self, PyObject *args);
PyObject *Arena_lock_label(ArenaObject *self, PyObject *ignored);
PyObject *Arena_forget_descriptors(ArenaObject *self, PyObject *ignored);
PyObject *native_ofd_lock(PyObject *module, PyObject *args);
PyObject *native_ofd_unlock(PyObject *module, PyObject *args);
PyObject *native_ofd_held(PyObject *module, PyObject *args);
PyObject *Arena_entry(ArenaObject *self, PyObject *arg);
PyObject *Arena_entry_write(ArenaObject *self, PyObject *args);
PyObject *Arena_entry_alive(ArenaObject *self, PyObject *args);
PyObject *Arena_entries(ArenaObject *self, PyObject *ignored);
PyObject *Arena_free_entry(ArenaObject *self, PyObject *ignored);
PyObject *Arena_probe_dead(ArenaObject *self, PyObject *args);
PyObject *Arena_mark_unlinked(ArenaObject *self, PyObject *ignored);
PyObject *Arena_is_unlinked(ArenaObject *self, PyObject *ignored);

/* handle.c */
extern PyType_Spec HandleSpec, EventHandleSpec;
PyObject *native_set_hooks(PyObject *module, PyObject *path);
PyObject *native_untrack(PyObject *module, PyObject *obj);

/* notify.c */
/* A tick's eventfd count (_native.NOTIFY_TICK); a wakeup adds 1.  Were a
 * loop to leave a billion wakeups unread, it would take them for a tick:
 * one recheck more, harmless. */
#define NOTIFY_TICK ((uint64_t)1 << 30)
extern PyType_Spec NotifierSpec;
PyObject *Arena_loop_address(ArenaObject *self, PyObject *args);
PyObject *Arena_set_loop(ArenaObject *self, PyObject *args);
PyObject *native_wakeup_sender(PyObject *module, PyObject *ignored);

/* heap.c */
extern PyType_Spec BlockViewSpec;
uint64_t small_take(ArenaObject *a, uint32_t nbytes, int *error, int *carved);
void small_published(ArenaObject *a);
void small_give(ArenaObject *a, uint64_t offset, uint32_t nbytes);
void large_unref(ArenaObject *a, uint64_t block, uint32_t count);
int large_pin(ArenaObject *a, uint64_t block, uint32_t entry);
int large_pin_unless_forgotten(ArenaObject *a, uint64_t block, uint32_t entry);
PyObject *block_view_new(ArenaObject *a, uint64_t block, uint32_t entry);
/* A large block of `length` bytes, being written by attach entry `entry`:
 * its offset (the bytes start BLOCK_HEADER after it), or 0 with
 * MemoryError set. */
uint64_t large_take(ArenaObject *a, uint64_t length, uint32_t entry);
void large_abandon(ArenaObject *a, uint64_t offset, uint32_t entry);
/* What publishing a block needs to know to refill the reserve (heap.c). */
typedef struct {
    uint32_t flags;
    int cls;
    uint64_t size;     /* the class's block size */
    uint64_t resident; /* what this value needed: what the next one likely needs */
} LargeRefill;
int large_adopt(ArenaObject *a, uint64_t offset, uint32_t entry, LargeRefill *refill);
void large_published(ArenaObject *a, const LargeRefill *refill);
PyObject *Arena_advise_huge(ArenaObject *self, PyObject *ignored);
uint64_t large_length(ArenaObject *a, uint64_t offset);
void release_values(ArenaObject *a, ValueSlot *slots, int count);
PyObject *Arena_block_alloc(ArenaObject *self, PyObject *args);
PyObject *Arena_heap_forget(ArenaObject *self, PyObject *arg);
PyObject *Arena_heap_statistics(ArenaObject *self, PyObject *ignored);
PyObject *native_before_fork(PyObject *module, PyObject *ignored);
PyObject *native_copy_bytes(PyObject *module, PyObject *arg);
long long copy_huge_threshold_set(long long ns_per_mib, unsigned long long *copies);
PyObject *Arena_after_fork_child(ArenaObject *self, PyObject *arg);
/* testpoints.c: named stops for tests that force an interleaving; nothing
 * unless built with -DMPEVENT_TEST_POINTS.  TEST_POINT_GIL where the
 * thread holds the GIL (it is given up while stopped). */
#ifdef MPEVENT_TEST_POINTS
void test_point(const char *name, int holds_gil);
int test_point_arm(const char *name);
int test_point_reached(const char *name, long long timeout_ns);
int test_point_release(const char *name);
#define TEST_POINT(name) test_point((name), 0)
#define TEST_POINT_GIL(name) test_point((name), 1)
#else
#define TEST_POINT(name) ((void)0)
#define TEST_POINT_GIL(name) ((void)0)
#endif
/* testing.c: the test surface, added to the module last (module.c) */
extern PyMethodDef Testing_functions[];
/* spill.c */
#define SPILL_PATH_MAX (SPILL_DIR_MAX + SPILL_NAME_MAX + 32u)
int spill_path(ArenaObject *a, uint64_t token, char *path, size_t size);
void spill_release(ArenaObject *a, const ValueSlot *slot);
int spill_open(ArenaObject *a, const ValueSlot *slot);
PyObject *Arena_spill_tokens(ArenaObject *self, PyObject *ignored);
PyObject *Arena_spill_settings(ArenaObject *self, PyObject *ignored);
PyObject *Arena_set_spill(ArenaObject *self, PyObject *args);
PyObject *native_fs_type(PyObject *module, PyObject *arg);

#endif
