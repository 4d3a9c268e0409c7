/*
 * Everything the arena asks of the operating system, behind one interface.
 *
 * No other file of src/native includes a kernel or POSIX header or makes a
 * system call (only the C library's strings and errno): a port to another
 * kernel is a new os.c.  Each call says what it needs and what the ports we
 * know of would use.  Only Linux is built and run (x86-64 natively,
 * aarch64 glibc and musl cross-built and run under qemu-user in CI); the
 * macOS and FreeBSD columns are read from their manuals, not run.
 *
 *   call              Linux (os.c)             macOS                           FreeBSD
 *   ----------------  -----------------------  ------------------------------  --------------------
 *   os_wait_word      futex FUTEX_WAIT         os_sync_wait_on_address(...,    _umtx_op
 *                     (shared: no _PRIVATE)      OS_SYNC_WAIT_ON_ADDRESS_SHARED) UMTX_OP_WAIT_UINT
 *                                                (macOS 14.4+)
 *   os_wake_word      futex FUTEX_WAKE         os_sync_wake_by_address_all,    _umtx_op UMTX_OP_WAKE
 *                                                the shared flag
 *   os_wait_private,  futex FUTEX_*_PRIVATE    os_sync_wait_on_address /       _umtx_op UMTX_OP_
 *   os_wake_private                              wake_by_address_all, no flag    WAIT_UINT_PRIVATE,
 *                                                                              WAKE_PRIVATE
 *   os_notify_fd      write(2) to an eventfd   no eventfd: a kqueue EVFILT_USER eventfd(2) (13+)
 *                                                trigger, or a pipe
 *   os_loop_address,  abstract AF_UNIX         no abstract namespace: socket   the same as macOS
 *   os_send_wakeup,     datagram sockets        files in a private directory
 *   os_wakeup_sender    (one per network ns)
 *   os_ofd_*          fcntl F_OFD_SETLK(W),    the same calls, numbered 90-92  none: per-process
 *                     F_OFD_GETLK (3.15+)                                     fcntl locks, one
 *                                                                             open per process
 *   os_populate       madvise                  F_PREALLOCATE on the file       posix_fallocate
 *                     MADV_POPULATE_WRITE
 *                     (5.14+; else touch)
 *   os_punch          madvise MADV_REMOVE      fcntl F_PUNCHHOLE               fspacectl
 *                                                                             SPACECTL_DEALLOC
 *   os_advise_huge    madvise MADV_HUGEPAGE    nothing                         nothing (superpages
 *                                                                             are automatic)
 *   os_map_shared,    mmap MAP_SHARED |        mmap MAP_SHARED (no NORESERVE;  mmap MAP_SHARED
 *   os_map_scratch,     MAP_NORESERVE;           a POSIX shm object cannot      | MAP_NOCORE
 *   os_unmap            munmap                   grow after its first size)
 *   os_read_at        pread                    the same                        the same
 *   os_open_read,     open O_NOFOLLOW |        the same                        the same
 *   os_close,           O_CLOEXEC; close;
 *   os_unlink           unlink
 *   os_fs_type        statfs f_type            statfs f_fstypename (a name)    statfs f_fstypename
 *   os_pid            getpid                   the same                        the same
 *   os_block_signals, sigprocmask (the         pthread_sigmask                 the same as macOS
 *   os_restore_signals  thread inherits it)
 *   os_at_fork        pthread_atfork           the same                        the same
 *   os_cpu            sched_getcpu             none: -1 (no same-CPU rule)     sched_getcpu (13+)
 *   os_runnable_tasks /proc/loadavg's running  none: -1 (no hand-over)         none: -1
 *                     count (the kernel's
 *                     nr_running, now)
 *   os_yield          sched_yield              the same                        the same
 *   os_usable_cpus    sched_getaffinity, and   sysctl hw.activecpu             cpuset_getaffinity
 *                     cgroup v2 cpu.max
 *   os_page_size      sysconf(_SC_PAGESIZE)    the same                        the same
 *   os_huge_page_size /sys/kernel/mm/          0                               0
 *                     transparent_hugepage/
 *                     hpage_pmd_size
 *   os_now_ns         CLOCK_MONOTONIC          the same                        the same
 *
 * None of these takes or needs the GIL, and none raises: each returns 0 or
 * an errno value (or the documented value), and its caller decides.
 */
#ifndef MPEVENT_OS_H
#define MPEVENT_OS_H

#include <stddef.h>
#include <stdint.h>

/* Sleep while *word == expected, visible to every process mapping the word;
 * timeout_ns < 0 sleeps with no timer.  0 when woken (or the word differed),
 * else ETIMEDOUT, EINTR or another errno. */
int os_wait_word(uint32_t *word, uint32_t expected, long long timeout_ns);
/* Wake up to `count` sleepers of os_wait_word on `word` (INT_MAX: all). */
void os_wake_word(uint32_t *word, int count);
/* The same pair for words no other process sees (cheaper where the kernel
 * tells the two apart: FUTEX_PRIVATE_FLAG). */
int os_wait_private(uint32_t *word, uint32_t expected, long long timeout_ns);
void os_wake_private(uint32_t *word, int count);

/* Add `count` to an eventfd's counter (a full counter is readable already). */
void os_notify_fd(int fd, uint64_t count);

/* Datagrams to an event loop in any process of this network namespace:
 * the abstract unix address of (token, slot), and one empty datagram sent
 * there.  os_send_wakeup returns 0 when it was queued or the loop's queue
 * is full (it has wakeups unread), else an errno (no such address: another
 * network namespace, or the loop is gone). */
#define OS_LOOP_ADDRESS_MAX 108 /* sun_path's size on Linux */
size_t os_loop_address(uint32_t token, uint32_t slot, char *path, size_t size);
int os_send_wakeup(uint32_t token, uint32_t slot);
/* The process's one socket that sends them (made on first use, kept): its
 * descriptor, or -1 with errno. */
int os_wakeup_sender(void);

/* Byte-range locks owned by an open file description (not by a process or
 * a thread): the kernel drops them when the description's last descriptor
 * closes, at exit or SIGKILL.  os_ofd_lock: 0 taken, EAGAIN held by another
 * description, or an errno (EINTR when `wait` was interrupted). */
int os_ofd_lock(int fd, long long start, long long length, int wait);
int os_ofd_unlock(int fd, long long start, long long length);
/* 1 if another open file description locks a byte of the range, 0 if
 * none does (the caller's own locks never count), -1 with errno. */
int os_ofd_held(int fd, long long start, long long length);

/* Back [addr, addr + length) with memory now, so a full tmpfs is an error
 * here and never a SIGBUS later.  0, ENOSYS where the kernel cannot
 * (older than 5.14: pages then fault in on first touch), or ENOMEM etc. */
int os_populate(void *addr, size_t length);
/* Give the pages back to the file system: the range reads as zeros. */
void os_punch(void *addr, size_t length);
/* Ask for transparent huge pages over the range; 1 if the kernel took it. */
int os_advise_huge(void *addr, size_t length);

int os_cpu(void);                /* the CPU this thread runs on, or -1 */
/* Tasks runnable on the whole machine now, the caller included; -1 if
 * this kernel does not say.  One pread() of a descriptor kept open. */
int os_runnable_tasks(void);
void os_yield(void);             /* give the CPU to a runnable task, if any */
double os_usable_cpus(void);     /* CPUs this process may use: affinity, cgroup quota */
size_t os_page_size(void);       /* read once, at first call */
size_t os_huge_page_size(void);  /* 0 when the kernel has none */
long long os_now_ns(void);       /* a monotonic clock */

/* Map a segment file shared, its pages reserved later (os_populate); a
 * page of shared scratch memory; unmap either.  NULL with errno. */
void *os_map_shared(int fd, size_t length);
void *os_map_scratch(size_t length);
void os_unmap(void *addr, size_t length);
/* Read from a file at an offset without moving it: bytes read, -1 with errno. */
long long os_read_at(int fd, void *buffer, size_t length, long long offset);
/* A spill file, read-only, never through a symbolic link: a descriptor
 * (close-on-exec) or -1 with errno. */
int os_open_read(const char *path);
void os_close(int fd);
int os_unlink(const char *path);                  /* 0 or an errno */
int os_fs_type(const char *path, long long *type); /* the file system's magic: 0 or an errno */
unsigned int os_pid(void);                        /* in this process's PID namespace */
/* Every signal blocked, and the mask before restored: a thread started in
 * between inherits "all blocked", so signals reach the threads Python knows. */
typedef struct {
    uint64_t opaque[16];
} os_signals;
void os_block_signals(os_signals *before);
void os_restore_signals(const os_signals *before);
/* Run these around every fork of the process: 0 or an errno. */
int os_at_fork(void (*prepare)(void), void (*parent)(void), void (*child)(void));

#endif
