/*
 * Shared declarations of the native load engine (bench.loadgen._engine).
 *
 * _engine.c: the Python module, the Engine type, harvest.
 * _loop.c: the I/O thread (epoll, connections, timers); it never touches Python objects.
 * _echo_server.c: echo_server(), the physical-limit echo server for `bench perf`.
 */
#ifndef SOCKBENCH_ENGINE_H
#define SOCKBENCH_ENGINE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>

#include "_hist.h"

/* Failure kinds, as bench.latency.FAILURE_KINDS names them. */
enum { K_TIMEOUT, K_RESET, K_REFUSED, K_PROTOCOL, NKINDS };
/* Request names, as Locust shows them. */
enum { N_ECHO, N_BROADCAST, NNAMES };
/* Connection life: waiting to (re)connect, connecting, open. */
enum { ST_NEW, ST_PAUSE, ST_CONNECTING, ST_OPEN };

#define INF_NS INT64_MAX
/* After a failure that drops the connection, wait this long before connecting again, so a
 * dead server costs a few failures per second per connection, not a spinning CPU (as the
 * Python users' RECONNECT_PAUSE_S). */
#define RECONNECT_PAUSE_NS 50000000LL
/* A closed-loop broadcast sender waits this long after its connection opens (and while it is
 * alone in this engine) before its first line, so the room has its receivers. */
#define JOIN_GRACE_NS 100000000LL
/* The longest line a broadcast receiver accepts before calling it a protocol error. */
#define MAX_LINE 65536

/* Counts since the last harvest, for one request name. */
typedef struct {
    uint64_t ok, fail[NKINDS], bytes, sent, lost, duplicated, out_of_order;
    uint64_t sum_us, min_us, max_us, fail_sum_us;
    uint64_t hist[HIST_BUCKETS];      /* successful requests / deliveries */
    uint64_t fail_hist[HIST_BUCKETS]; /* how long each failed wait lasted */
} stats_t;

/* Per receiver: the last sequence number seen from each sender (open addressing on a 64-bit
 * hash of the sender id; 0 marks an empty slot), and which of this engine's senders it is. */
#define NOT_OURS UINT64_MAX /* a sender of another engine (process, Locust worker) */
typedef struct {
    uint64_t key;    /* the hash; 0: an empty slot */
    uint64_t seq;    /* the last sequence number seen */
    uint64_t sender; /* (gen << 32 | slot) of this engine's own sender, NOT_OURS for another's */
} seqent_t;

typedef struct {
    seqent_t *ents;
    uint32_t cap, len;
} seqmap_t;

typedef struct conn {
    uint32_t slot, gen, epoch;
    int fd, kind, state, removed, want_out, heap_idx;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int size;                 /* bytes per line, newline included */
    double rate;              /* lines/s; 0 = closed loop */
    int64_t timeout_ns, silence_ns;
    int64_t deadline;         /* the next timer, INF_NS for none */
    int64_t wait_start;       /* when the current connect began */
    int64_t next_send;        /* open loop: the intended time of the next line */
    char *payload;            /* echo: the line; broadcast: a line template */
    /* echo: intended (open loop) or actual (closed loop) send times of lines in flight */
    int64_t *ring;
    uint32_t ring_cap, ring_head, ring_len, in_pos;
    /* bytes not yet accepted by the socket */
    char *out;
    size_t out_len, out_off, out_cap;
    /* broadcast */
    uint64_t seq;
    int awaiting;             /* closed loop: the last line has not been seen by a receiver */
    int64_t sent_at, last_rx;
    char *part;               /* a received line's first part */
    size_t part_len, part_cap;
    seqmap_t seen;
} conn_t;

typedef struct engine {
    pthread_t thread;
    int thread_started, ep, wake_fd;
    pthread_mutex_t lock;     /* everything below; the I/O thread holds it while it works */
    pthread_mutex_t harvest_lock;
    pthread_cond_t synced;
    uint64_t commands, commands_done;
    int stop;
    conn_t **table;
    uint32_t table_cap, nconns;
    uint32_t *free_slots;
    uint32_t nfree;
    uint32_t *pending;
    uint32_t npending, pending_cap;
    conn_t **heap;
    uint32_t heap_len, heap_cap;
    stats_t *stats[2];        /* [buffer][name]: the I/O thread writes stats[cur] */
    int cur;
    uint32_t gen_counter, epoch_counter;
    int nopen_broadcast;
    int nopen_closed_loop;    /* open broadcast connections of rate 0: lines release senders */
    int broadcast_dirty;
    double broadcast_rate;
    int64_t broadcast_silence_ns;
    uint64_t rng;
    char prefix[48];          /* "<pid hex>.e<engine serial>." starts this engine's sender ids */
    size_t prefix_len;
    char *rxbuf;
} engine_t;

int64_t mono_ns(void);
int64_t wall_us(void);
void *engine_run(void *arg);
void engine_free_conn(engine_t *e, conn_t *c);
void stats_reset(stats_t *s);
PyObject *sockbench_echo_server(PyObject *self, PyObject *args, PyObject *kwargs);

#endif
