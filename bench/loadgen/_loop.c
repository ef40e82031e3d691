/*
 * The engine's I/O thread: one epoll set over every connection, one min-heap of timers
 * (connect and reply timeouts, intended send times, reconnect pauses, silent rooms).
 *
 * It holds engine->lock while it handles a batch of events and timers, and releases it only
 * while it waits in epoll; harvest, add and remove take the same lock, so they see a
 * consistent state. It never touches a Python object and runs without the GIL.
 *
 * Timing: echo latency in CLOCK_MONOTONIC from the send (closed loop) or from the intended
 * send time (open loop, as wrk2: a stall delays every line behind it, and each one's latency
 * includes the stall). Broadcast latency is CLOCK_REALTIME receipt minus the send time the
 * sender wrote into the line, so it works across processes on one machine.
 */
#define _GNU_SOURCE
#include "_engine.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define EVENT_BATCH 512
#define RXBUF_SIZE 65536
#define WAKE_TOKEN UINT64_MAX
/* Longest epoll wait without a timer due: commands also wake the thread at once. */
#define IDLE_WAIT_NS 200000000LL
/* Open-loop echo behind schedule sends at most this many lines per timer, then yields. */
#define CATCH_UP_BURST 64

int64_t mono_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int64_t wall_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000LL + t.tv_nsec / 1000;
}

void stats_reset(stats_t *s) {
    memset(s, 0, sizeof *s);
    s->min_us = UINT64_MAX;
}

static stats_t *stats_of(engine_t *e, conn_t *c) { return &e->stats[e->cur][c->kind]; }

static void record_ok(stats_t *s, int64_t us, uint64_t bytes) {
    uint64_t v = hist_clamp(us < 0 ? 0 : (uint64_t)us);
    s->ok++;
    s->bytes += bytes;
    s->hist[hist_index(v)]++;
    s->sum_us += v;
    if (v < s->min_us) s->min_us = v;
    if (v > s->max_us) s->max_us = v;
}

static void record_fail(stats_t *s, int kind, int64_t us) {
    uint64_t v = hist_clamp(us < 0 ? 0 : (uint64_t)us);
    s->fail[kind]++;
    s->fail_hist[hist_index(v)]++;
    s->fail_sum_us += v;
}

static uint64_t next_random(engine_t *e) { /* xorshift64 */
    uint64_t x = e->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return e->rng = x;
}

/* A random phase in [0, interval): connections that open together do not send together. */
static int64_t phase_ns(engine_t *e, double rate) {
    if (rate <= 0) return 0;
    int64_t interval = (int64_t)(1e9 / rate);
    return interval > 0 ? (int64_t)(next_random(e) % (uint64_t)interval) : 0;
}

/* ---- timer heap ---------------------------------------------------------------------- */

static void heap_swap(engine_t *e, uint32_t a, uint32_t b) {
    conn_t *t = e->heap[a];
    e->heap[a] = e->heap[b];
    e->heap[b] = t;
    e->heap[a]->heap_idx = (int)a;
    e->heap[b]->heap_idx = (int)b;
}

static void heap_up(engine_t *e, uint32_t i) {
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (e->heap[p]->deadline <= e->heap[i]->deadline) break;
        heap_swap(e, i, p);
        i = p;
    }
}

static void heap_down(engine_t *e, uint32_t i) {
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < e->heap_len && e->heap[l]->deadline < e->heap[m]->deadline) m = l;
        if (r < e->heap_len && e->heap[r]->deadline < e->heap[m]->deadline) m = r;
        if (m == i) return;
        heap_swap(e, i, m);
        i = m;
    }
}

static void heap_remove(engine_t *e, conn_t *c) {
    if (c->heap_idx < 0) return;
    uint32_t i = (uint32_t)c->heap_idx, last = --e->heap_len;
    if (i != last) {
        heap_swap(e, i, last);
        heap_down(e, i);
        heap_up(e, i);
    }
    c->heap_idx = -1;
}

/* Set a connection's next timer (INF_NS: none). */
static void set_deadline(engine_t *e, conn_t *c, int64_t deadline) {
    c->deadline = deadline;
    if (deadline == INF_NS) {
        heap_remove(e, c);
        return;
    }
    if (c->heap_idx < 0) {
        if (e->heap_len == e->heap_cap) {
            uint32_t cap = e->heap_cap ? 2 * e->heap_cap : 64;
            conn_t **h = realloc(e->heap, cap * sizeof *h);
            if (!h) return; /* out of memory: the timer is lost, the connection idles */
            e->heap = h;
            e->heap_cap = cap;
        }
        c->heap_idx = (int)e->heap_len;
        e->heap[e->heap_len++] = c;
        heap_up(e, (uint32_t)c->heap_idx);
    } else {
        heap_down(e, (uint32_t)c->heap_idx);
        heap_up(e, (uint32_t)c->heap_idx);
    }
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Recompute a connection's next timer from its state. */
static void reschedule(engine_t *e, conn_t *c) {
    int64_t d = INF_NS;
    switch (c->state) {
    case ST_PAUSE: d = c->deadline; break;
    case ST_CONNECTING: d = c->wait_start + c->timeout_ns; break;
    case ST_OPEN:
        if (c->kind == N_ECHO) {
            if (c->ring_len) d = c->ring[c->ring_head] + c->timeout_ns;
            if (c->rate > 0) d = min64(d, c->next_send);
        } else {
            d = c->next_send;
            if (c->awaiting) d = min64(d, c->sent_at + c->timeout_ns);
            if (c->silence_ns > 0) d = min64(d, c->last_rx + c->silence_ns);
        }
        break;
    default: break;
    }
    set_deadline(e, c, d);
}

/* ---- sockets --------------------------------------------------------------------------- */

static int epoll_set(engine_t *e, conn_t *c, int op, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.u64 = ((uint64_t)c->epoch << 32) | c->slot};
    return epoll_ctl(e->ep, op, c->fd, &ev);
}

static int kind_of_errno(int err) {
    if (err == ECONNREFUSED) return K_REFUSED;
    if (err == ETIMEDOUT) return K_TIMEOUT;
    return K_RESET; /* reset, broken pipe, unreachable, out of descriptors, ... */
}

/* An open broadcast connection joins (+1) or leaves (-1) the engine's counts. */
static void count_open_broadcast(engine_t *e, conn_t *c, int delta) {
    e->nopen_broadcast += delta;
    if (c->rate <= 0) e->nopen_closed_loop += delta;
}

static void close_socket(engine_t *e, conn_t *c) {
    if (c->fd >= 0) {
        close(c->fd); /* also leaves the epoll set */
        c->fd = -1;
    }
    if (c->state == ST_OPEN && c->kind == N_BROADCAST) count_open_broadcast(e, c, -1);
    c->ring_len = c->ring_head = c->in_pos = 0;
    c->out_len = c->out_off = 0;
    c->part_len = 0;
    c->want_out = 0;
    c->awaiting = 0;
}

/* Count one failure, drop the connection, connect again after a pause. The failed wait
 * began at `since` (monotonic ns). */
static void conn_fail(engine_t *e, conn_t *c, int kind, int64_t now, int64_t since) {
    record_fail(stats_of(e, c), kind, (now - since) / 1000);
    close_socket(e, c);
    c->state = ST_PAUSE;
    set_deadline(e, c, now + RECONNECT_PAUSE_NS);
}

/* When the oldest thing this connection waits for began. */
static int64_t wait_began(conn_t *c, int64_t now) {
    if (c->state == ST_CONNECTING) return c->wait_start;
    if (c->kind == N_ECHO && c->ring_len) return c->ring[c->ring_head];
    if (c->kind == N_BROADCAST && c->awaiting) return c->sent_at;
    return now;
}

/* Write what is queued. Returns -1 when the connection failed (already counted). */
static int flush_out(engine_t *e, conn_t *c, int64_t now) {
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!c->want_out) {
                    c->want_out = 1;
                    epoll_set(e, c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
                }
                return 0;
            }
            conn_fail(e, c, kind_of_errno(errno), now, wait_began(c, now));
            return -1;
        }
        c->out_off += (size_t)w;
    }
    c->out_len = c->out_off = 0;
    if (c->want_out) {
        c->want_out = 0;
        epoll_set(e, c, EPOLL_CTL_MOD, EPOLLIN);
    }
    return 0;
}

/* Queue bytes (kept until the socket takes them) and try to write them. */
static int send_bytes(engine_t *e, conn_t *c, const char *data, size_t len, int64_t now) {
    if (c->out_len == 0) { /* the usual case: straight to the socket, no copy */
        ssize_t w = send(c->fd, data, len, MSG_NOSIGNAL);
        if (w == (ssize_t)len) return 0;
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                conn_fail(e, c, kind_of_errno(errno), now, wait_began(c, now));
                return -1;
            }
            w = 0;
        }
        data += w;
        len -= (size_t)w;
    }
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 256;
        while (cap < c->out_len + len) cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) {
            conn_fail(e, c, K_RESET, now, wait_began(c, now));
            return -1;
        }
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    return flush_out(e, c, now);
}

/* ---- echo ------------------------------------------------------------------------------- */

/* Send one echo line whose latency will be timed from `t0`. */
static int echo_send(engine_t *e, conn_t *c, int64_t t0, int64_t now) {
    if (c->ring_len == c->ring_cap) {
        /* the ring holds a timeout's worth of lines at this rate: the oldest is overdue */
        conn_fail(e, c, K_TIMEOUT, now, c->ring[c->ring_head]);
        return -1;
    }
    c->ring[(c->ring_head + c->ring_len++) & (c->ring_cap - 1)] = t0;
    stats_of(e, c)->sent++;
    return send_bytes(e, c, c->payload, (size_t)c->size, now);
}

/* Bytes arrived on an echo connection: check them against the line, time each whole one. */
static int echo_received(engine_t *e, conn_t *c, const char *buf, size_t n, int64_t now) {
    size_t off = 0;
    while (off < n) {
        if (c->ring_len == 0) { /* nothing in flight: the server sent something unasked */
            conn_fail(e, c, K_PROTOCOL, now, now);
            return -1;
        }
        size_t take = (size_t)c->size - c->in_pos;
        if (take > n - off) take = n - off;
        if (memcmp(buf + off, c->payload + c->in_pos, take) != 0) { /* an ERR line, or garbage */
            conn_fail(e, c, K_PROTOCOL, now, c->ring[c->ring_head]);
            return -1;
        }
        off += take;
        c->in_pos += (uint32_t)take;
        if (c->in_pos < (uint32_t)c->size) break;
        c->in_pos = 0;
        int64_t t0 = c->ring[c->ring_head];
        c->ring_head = (c->ring_head + 1) & (c->ring_cap - 1);
        c->ring_len--;
        record_ok(stats_of(e, c), (now - t0) / 1000, (uint64_t)c->size);
        if (c->rate <= 0 && echo_send(e, c, now, now) < 0) return -1;
    }
    return 0;
}

/* ---- broadcast -------------------------------------------------------------------------- */

static int broadcast_send(engine_t *e, conn_t *c, int64_t now) {
    char head[160];
    c->seq++;
    int len = snprintf(head, sizeof head, "%s%llx %llu %lld ", e->prefix,
                       (unsigned long long)(((uint64_t)c->gen << 32) | c->slot),
                       (unsigned long long)c->seq, (long long)wall_us());
    stats_of(e, c)->sent++;
    c->sent_at = now;
    c->awaiting = c->rate <= 0;
    if (len + 1 >= c->size) { /* longer than message_bytes: no padding, as the Python users */
        head[len] = '\n';
        return send_bytes(e, c, head, (size_t)len + 1, now);
    }
    memcpy(c->payload, head, (size_t)len); /* the rest of the template is x...x\n */
    int r = send_bytes(e, c, c->payload, (size_t)c->size, now);
    memset(c->payload, 'x', (size_t)len);
    return r;
}

/* Every line of a busy room is hashed, parsed and timed by each receiver: at 100 clients that
 * is millions of lines a second on the load generator's one core, so this path works a word
 * at a time, parses a sender's id once per receiver, and looks a sender up only when some
 * sender waits for its line (closed loop). Measured against the gevent room, 100 clients all
 * sending, engine thread at 100% of its core, five interleaved rounds: 8.6M -> 10.5M
 * deliveries/s (median; 1.23x), the per-line work from ~40% to ~33% of the thread, the rest
 * being the kernel's receive path. */

static uint64_t mix64(uint64_t h) { /* MurmurHash3's finaliser */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

static uint64_t hash_bytes(const char *p, size_t n) { /* never 0 (0 marks an empty slot) */
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n, w;
    if (n < 8) {
        for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
        h = mix64(h);
        return h ? h : 1;
    }
    const char *last = p + n - 8; /* the tail is the last 8 bytes, overlapping the words before */
    for (; p < last; p += 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    memcpy(&w, last, 8);
    h = mix64((h ^ w) * 0x100000001b3ULL);
    return h ? h : 1;
}

/* The slot of `key` in the map: its own, or the empty one where it goes. */
static uint32_t seqmap_slot(seqmap_t *m, uint64_t key) {
    uint32_t i = (uint32_t)(key ^ (key >> 32)) & (m->cap - 1);
    while (m->ents[i].key && m->ents[i].key != key) i = (i + 1) & (m->cap - 1);
    return i;
}

static int seqmap_grow(seqmap_t *m) {
    seqmap_t bigger = {0};
    bigger.cap = m->cap ? 2 * m->cap : 16;
    bigger.ents = calloc(bigger.cap, sizeof(seqent_t));
    if (!bigger.ents) return -1;
    for (uint32_t i = 0; i < m->cap; i++)
        if (m->ents[i].key) bigger.ents[seqmap_slot(&bigger, m->ents[i].key)] = m->ents[i];
    bigger.len = m->len;
    free(m->ents);
    *m = bigger;
    return 0;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* Eight ASCII digits in a little-endian word (D. Lemire, "Fast float parsing in practice"). */
static int eight_digits(uint64_t w) {
    return ((w & 0xf0f0f0f0f0f0f0f0ULL) |
            (((w + 0x0606060606060606ULL) & 0xf0f0f0f0f0f0f0f0ULL) >> 4)) == 0x3333333333333333ULL;
}

static uint64_t eight_digits_value(uint64_t w) {
    w -= 0x3030303030303030ULL;
    w = w * 10 + (w >> 8);
    return (((w & 0x000000ff000000ffULL) * (100 + (1000000ULL << 32))) +
            (((w >> 16) & 0x000000ff000000ffULL) * (1 + (10000ULL << 32)))) >> 32;
}
#endif

/* A decimal number of one digit or more at *p; *p moves past it. */
static int parse_u64(const char **p, const char *end, uint64_t *out) {
    const char *s = *p;
    uint64_t v = 0;
    if (s >= end || *s < '0' || *s > '9') return -1;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t w;
    while (end - s >= 8 && (memcpy(&w, s, 8), eight_digits(w))) {
        v = v * 100000000ULL + eight_digits_value(w);
        s += 8;
    }
#endif
    while (s < end && *s >= '0' && *s <= '9') v = v * 10 + (uint64_t)(*s++ - '0');
    *p = s;
    *out = v;
    return 0;
}

/* The sender id "<prefix><hex gen<<32|slot>" as this engine's (gen << 32 | slot), or NOT_OURS
 * when another engine (another process, another Locust worker) sent the line. */
static uint64_t own_sender(engine_t *e, const char *id, size_t n) {
    if (n <= e->prefix_len || n > e->prefix_len + 16 || memcmp(id, e->prefix, e->prefix_len) != 0)
        return NOT_OURS;
    uint64_t v = 0;
    for (size_t i = e->prefix_len; i < n; i++) {
        char ch = id[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0) return NOT_OURS;
        v = v * 16 + (uint64_t)d;
    }
    return v;
}

/* A closed-loop sender of this engine whose line has reached a receiver sends its next. */
static void release_sender(engine_t *e, uint64_t sender, uint64_t seq, int64_t now) {
    if (sender == NOT_OURS) return;
    uint32_t slot = (uint32_t)sender, gen = (uint32_t)(sender >> 32);
    if (slot >= e->table_cap) return;
    conn_t *s = e->table[slot];
    if (!s || s->gen != gen || s->state != ST_OPEN || !s->awaiting || s->seq != seq || s->removed) return;
    s->awaiting = 0;
    if (broadcast_send(e, s, now) == 0) reschedule(e, s);
}

/* What a Locust process sends once to learn the server's mode (bench/loadgen/sequence.py,
 * PROBE_PREFIX): receivers skip it, it is neither a delivery nor a protocol error. */
static const char PROBE_PREFIX[] = "sockbench-probe ";

/* One whole line "<sender> <seq> <sent µs> x...": check its sequence, time it. */
static int broadcast_line(engine_t *e, conn_t *c, const char *p, size_t n, int64_t now,
                          int64_t now_wall) {
    if (n >= sizeof PROBE_PREFIX - 1 && memcmp(p, PROBE_PREFIX, sizeof PROBE_PREFIX - 1) == 0) return 0;
    const char *end = p + n, *sp = memchr(p, ' ', n);
    uint64_t seq, sent_us;
    if (!sp || sp == p) goto bad;
    const char *q = sp + 1;
    if (parse_u64(&q, end, &seq) < 0 || q >= end || *q++ != ' ') goto bad;
    if (parse_u64(&q, end, &sent_us) < 0 || (q < end && *q != ' ')) goto bad;
    stats_t *st = stats_of(e, c);
    if (c->seen.len * 2 >= c->seen.cap && seqmap_grow(&c->seen) < 0) goto bad;
    uint64_t key = hash_bytes(p, (size_t)(sp - p));
    seqent_t *ent = &c->seen.ents[seqmap_slot(&c->seen, key)];
    if (ent->key) {
        uint64_t last = ent->seq;
        if (seq == last) {
            st->duplicated++;
            return 0;
        }
        if (seq < last) {
            st->out_of_order++;
            return 0;
        }
        if (seq > last + 1) st->lost += seq - last - 1;
    } else { /* a sender this receiver has not heard yet: whose is it, once */
        ent->key = key;
        ent->sender = own_sender(e, p, (size_t)(sp - p));
        c->seen.len++;
    }
    ent->seq = seq;
    record_ok(st, now_wall - (int64_t)sent_us, n + 1);
    /* only closed-loop senders wait for their line: skip the lookup (a cache miss) otherwise */
    if (e->nopen_closed_loop) release_sender(e, ent->sender, seq, now);
    return 0;
bad: /* an ERR line or something that is not a broadcast line */
    conn_fail(e, c, K_PROTOCOL, now, now);
    return -1;
}

static int broadcast_received(engine_t *e, conn_t *c, const char *buf, size_t n, int64_t now) {
    int64_t now_wall = wall_us();
    uint32_t epoch = c->epoch;
    c->last_rx = now;
    while (n > 0) {
        const char *nl = memchr(buf, '\n', n);
        size_t chunk = nl ? (size_t)(nl - buf) : n;
        if (!nl || c->part_len) { /* keep (or complete) a line that spans reads */
            if (c->part_len + chunk > MAX_LINE) {
                conn_fail(e, c, K_PROTOCOL, now, now);
                return -1;
            }
            if (c->part_len + chunk > c->part_cap) {
                size_t cap = c->part_cap ? c->part_cap : 256;
                while (cap < c->part_len + chunk) cap *= 2;
                char *p = realloc(c->part, cap);
                if (!p) {
                    conn_fail(e, c, K_RESET, now, now);
                    return -1;
                }
                c->part = p;
                c->part_cap = cap;
            }
            memcpy(c->part + c->part_len, buf, chunk);
            c->part_len += chunk;
            if (!nl) return 0;
            size_t len = c->part_len;
            c->part_len = 0;
            if (broadcast_line(e, c, c->part, len, now, now_wall) < 0) return -1;
        } else if (broadcast_line(e, c, buf, chunk, now, now_wall) < 0) {
            return -1;
        }
        if (c->epoch != epoch || c->state != ST_OPEN) return -1; /* failed while releasing */
        buf += chunk + 1;
        n -= chunk + 1;
    }
    return 0;
}

/* ---- connection life -------------------------------------------------------------------- */

static void conn_opened(engine_t *e, conn_t *c, int64_t now) {
    c->state = ST_OPEN;
    epoll_set(e, c, EPOLL_CTL_MOD, EPOLLIN);
    c->last_rx = now;
    if (c->kind == N_ECHO) {
        if (c->rate > 0) {
            c->next_send = now + phase_ns(e, c->rate);
        } else if (echo_send(e, c, now, now) < 0) {
            return;
        }
    } else {
        count_open_broadcast(e, c, +1);
        c->seen.len = 0;
        if (c->seen.cap) memset(c->seen.ents, 0, c->seen.cap * sizeof(seqent_t));
        c->next_send = now + (c->rate > 0 ? phase_ns(e, c->rate) : JOIN_GRACE_NS);
    }
    reschedule(e, c);
}

static void conn_connect(engine_t *e, conn_t *c, int64_t now) {
    int one = 1;
    c->wait_start = now;
    c->fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) { /* e.g. out of descriptors: counted, retried after the pause */
        c->state = ST_CONNECTING;
        conn_fail(e, c, kind_of_errno(errno), now, now);
        return;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->epoch = ++e->epoch_counter;
    c->state = ST_CONNECTING;
    if (epoll_set(e, c, EPOLL_CTL_ADD, EPOLLOUT) < 0) {
        conn_fail(e, c, K_RESET, now, now);
        return;
    }
    if (connect(c->fd, (struct sockaddr *)&c->addr, c->addrlen) == 0) {
        conn_opened(e, c, now);
    } else if (errno == EINPROGRESS) {
        reschedule(e, c);
    } else {
        conn_fail(e, c, kind_of_errno(errno), now, now);
    }
}

static void on_event(engine_t *e, conn_t *c, uint32_t events, int64_t now) {
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
        if (err) conn_fail(e, c, kind_of_errno(err), now, c->wait_start);
        else conn_opened(e, c, now);
        return;
    }
    if (c->state != ST_OPEN) return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        ssize_t r = recv(c->fd, e->rxbuf, RXBUF_SIZE, 0);
        if (r == 0) { /* the server closed the connection */
            conn_fail(e, c, K_RESET, now, wait_began(c, now));
            return;
        }
        if (r < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                conn_fail(e, c, kind_of_errno(errno), now, wait_began(c, now));
            return;
        }
        int rc = c->kind == N_ECHO ? echo_received(e, c, e->rxbuf, (size_t)r, now)
                                   : broadcast_received(e, c, e->rxbuf, (size_t)r, now);
        if (rc < 0) return;
    }
    if ((events & EPOLLOUT) && c->want_out && flush_out(e, c, now) < 0) return;
    reschedule(e, c);
}

/* A connection's timer is due. */
static void on_timer(engine_t *e, conn_t *c, int64_t now) {
    if (c->state == ST_PAUSE || c->state == ST_NEW) {
        conn_connect(e, c, now);
        return;
    }
    if (c->state == ST_CONNECTING) {
        if (now >= c->wait_start + c->timeout_ns) conn_fail(e, c, K_TIMEOUT, now, c->wait_start);
        else reschedule(e, c);
        return;
    }
    if (c->kind == N_ECHO) {
        if (c->ring_len && now >= c->ring[c->ring_head] + c->timeout_ns) {
            conn_fail(e, c, K_TIMEOUT, now, c->ring[c->ring_head]);
            return;
        }
        if (c->rate > 0) {
            int64_t interval = (int64_t)(1e9 / c->rate);
            if (interval < 1) interval = 1;
            /* behind schedule, send what is due (each timed from its intended time) */
            for (int burst = 0; c->next_send <= now && burst < CATCH_UP_BURST; burst++) {
                if (echo_send(e, c, c->next_send, now) < 0) return;
                c->next_send += interval;
            }
        }
    } else {
        if (c->silence_ns > 0 && now >= c->last_rx + c->silence_ns) {
            /* a silent room: count it, keep listening (as the Python users) */
            record_fail(stats_of(e, c), K_TIMEOUT, (now - c->last_rx) / 1000);
            c->last_rx = now;
        }
        if (c->awaiting && now >= c->sent_at + c->timeout_ns) {
            /* no receiver here saw the line: count it, send the next one */
            record_fail(stats_of(e, c), K_TIMEOUT, (now - c->sent_at) / 1000);
            c->awaiting = 0;
            c->next_send = now;
        }
        if (!c->awaiting && c->next_send <= now) {
            if (c->rate > 0) {
                int64_t interval = (int64_t)(1e9 / c->rate);
                /* no catch-up bursts: a late line moves the schedule (as the Python users) */
                c->next_send = c->next_send + interval > now ? c->next_send + interval : now + interval;
            } else if (e->nopen_broadcast < 2) {
                c->next_send = now + JOIN_GRACE_NS; /* alone here: nobody would release it */
                reschedule(e, c);
                return;
            } else {
                c->next_send = INF_NS;
            }
            if (broadcast_send(e, c, now) < 0) return;
        }
    }
    reschedule(e, c);
}

/* ---- commands --------------------------------------------------------------------------- */

void engine_free_conn(engine_t *e, conn_t *c) {
    if (c->fd >= 0) close(c->fd);
    if (c->state == ST_OPEN && c->kind == N_BROADCAST) count_open_broadcast(e, c, -1);
    heap_remove(e, c);
    e->table[c->slot] = NULL;
    e->free_slots[e->nfree++] = c->slot;
    e->nconns--;
    free(c->payload);
    free(c->ring);
    free(c->out);
    free(c->part);
    free(c->seen.ents);
    free(c);
}

static void run_commands(engine_t *e, int64_t now) {
    for (uint32_t i = 0; i < e->npending; i++) {
        conn_t *c = e->table[e->pending[i]];
        if (!c) continue;
        if (c->removed) engine_free_conn(e, c);
        else if (c->state == ST_NEW) conn_connect(e, c, now);
    }
    e->npending = 0;
    if (e->broadcast_dirty) {
        e->broadcast_dirty = 0;
        for (uint32_t s = 0; s < e->table_cap; s++) {
            conn_t *c = e->table[s];
            if (!c || c->kind != N_BROADCAST || c->removed) continue;
            int changed = c->rate != e->broadcast_rate, open = c->state == ST_OPEN;
            if (open) count_open_broadcast(e, c, -1);
            c->rate = e->broadcast_rate;
            if (open) count_open_broadcast(e, c, +1);
            c->silence_ns = e->broadcast_silence_ns;
            if (c->state != ST_OPEN) continue;
            if (changed) { /* a new schedule from now; a closed-loop line in flight is let go */
                c->awaiting = 0;
                c->next_send = now + (c->rate > 0 ? phase_ns(e, c->rate) : 0);
            }
            c->last_rx = now;
            reschedule(e, c);
        }
    }
    e->commands_done = e->commands;
    pthread_cond_broadcast(&e->synced);
}

/* ---- the loop ---------------------------------------------------------------------------- */

static int wait_events(int ep, struct epoll_event *evs, int64_t wait_ns) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
    static int have_pwait2 = 1;
    if (have_pwait2) {
        struct timespec ts = {.tv_sec = wait_ns / 1000000000LL, .tv_nsec = wait_ns % 1000000000LL};
        int n = epoll_pwait2(ep, evs, EVENT_BATCH, &ts, NULL);
        if (n >= 0 || errno != ENOSYS) return n;
        have_pwait2 = 0;
    }
#endif
    return epoll_wait(ep, evs, EVENT_BATCH, (int)((wait_ns + 999999) / 1000000));
}

void *engine_run(void *arg) {
    engine_t *e = arg;
    struct epoll_event evs[EVENT_BATCH];
    pthread_mutex_lock(&e->lock);
    for (;;) {
        int64_t now = mono_ns(), wait_ns = IDLE_WAIT_NS;
        if (e->heap_len) {
            int64_t d = e->heap[0]->deadline - now;
            wait_ns = d < 0 ? 0 : (d < wait_ns ? d : wait_ns);
        }
        if (e->npending || e->broadcast_dirty) wait_ns = 0;
        if (e->stop) break;
        pthread_mutex_unlock(&e->lock);
        int n = wait_events(e->ep, evs, wait_ns);
        pthread_mutex_lock(&e->lock);
        now = mono_ns();
        run_commands(e, now);
        for (int k = 0; k < n; k++) {
            uint64_t token = evs[k].data.u64;
            if (token == WAKE_TOKEN) {
                uint64_t drained;
                if (read(e->wake_fd, &drained, sizeof drained) < 0) { /* nothing to drain */ }
                continue;
            }
            uint32_t slot = (uint32_t)token, epoch = (uint32_t)(token >> 32);
            conn_t *c = slot < e->table_cap ? e->table[slot] : NULL;
            if (!c || c->epoch != epoch || c->fd < 0) continue; /* a socket closed in this batch */
            on_event(e, c, evs[k].events, now);
        }
        if (n > 0) now = mono_ns();
        /* bounded, so a timer that stays due cannot starve the sockets */
        for (int fired = 0; e->heap_len && e->heap[0]->deadline <= now && fired < 4096; fired++)
            on_timer(e, e->heap[0], now);
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}
