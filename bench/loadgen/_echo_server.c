/*
 * echo_server(listen_fd, seconds=0.0): the physical-limit echo server for `bench perf`.
 *
 * One thread, one epoll set, non-blocking sockets: every byte read is written back. For
 * whole-line clients that is the same as echoing lines, with no Python in the way, so it is
 * the fastest any backend could serve on this machine. When a client does not read, what it
 * has not taken is kept and its socket is not read again until that is written (no loss).
 *
 * It runs with the GIL released and comes back to Python every CHECK_NS to run signal
 * handlers, so SIGINT / SIGTERM handlers that raise stop it.
 */
#define _GNU_SOURCE
#include "_engine.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define CHECK_NS 100000000LL
#define BATCH 512

typedef struct { /* per descriptor: a client of ours? bytes read but not yet written back */
    int open;
    char *data;
    size_t len, off;
} backlog_t;

typedef struct {
    int ep, listener;
    backlog_t *backlog;
    size_t nbacklog;
    char buf[65536];
} server_t;

static void drop(server_t *s, int fd) {
    if ((size_t)fd < s->nbacklog) {
        free(s->backlog[fd].data);
        memset(&s->backlog[fd], 0, sizeof(backlog_t));
    }
    close(fd);
}

static int ensure(server_t *s, int fd) {
    if ((size_t)fd >= s->nbacklog) {
        size_t cap = s->nbacklog ? s->nbacklog : 1024;
        while (cap <= (size_t)fd) cap *= 2;
        backlog_t *b = realloc(s->backlog, cap * sizeof *b);
        if (!b) return -1;
        memset(b + s->nbacklog, 0, (cap - s->nbacklog) * sizeof *b);
        s->backlog = b;
        s->nbacklog = cap;
    }
    return 0;
}

static int keep(server_t *s, int fd, const char *p, size_t n) {
    backlog_t *b = &s->backlog[fd];
    char *d = malloc(n);
    if (!d) return -1;
    memcpy(d, p, n);
    b->data = d;
    b->len = n;
    b->off = 0;
    struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
    return epoll_ctl(s->ep, EPOLL_CTL_MOD, fd, &ev);
}

/* Write p[0:n] to fd; what the socket does not take is kept. -1: the client is gone. */
static int put(server_t *s, int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return keep(s, fd, p, n);
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void on_ready(server_t *s, int fd, uint32_t events) {
    if (s->backlog[fd].data) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        backlog_t *b = &s->backlog[fd];
        char *data = b->data;
        size_t len = b->len - b->off;
        const char *p = data + b->off;
        b->data = NULL;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(s->ep, EPOLL_CTL_MOD, fd, &ev);
        int r = put(s, fd, p, len);
        free(data);
        if (r < 0) drop(s, fd);
        return;
    }
    ssize_t r = recv(fd, s->buf, sizeof s->buf, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        drop(s, fd);
        return;
    }
    if (r > 0 && put(s, fd, s->buf, (size_t)r) < 0) drop(s, fd);
}

static void accept_all(server_t *s) {
    int one = 1;
    for (;;) {
        int c = accept4(s->listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) return; /* EAGAIN, or out of descriptors: try again on the next wake */
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = c};
        if (ensure(s, c) < 0 || epoll_ctl(s->ep, EPOLL_CTL_ADD, c, &ev) < 0) {
            close(c);
            continue;
        }
        s->backlog[c].open = 1;
    }
}

PyObject *sockbench_echo_server(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"listen_fd", "seconds", NULL};
    int listener;
    double seconds = 0.0;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|d:echo_server", kwlist, &listener, &seconds))
        return NULL;
    server_t *s = calloc(1, sizeof *s);
    if (!s) return PyErr_NoMemory();
    s->listener = listener;
    s->ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = listener};
    if (s->ep < 0 || epoll_ctl(s->ep, EPOLL_CTL_ADD, listener, &lev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        if (s->ep >= 0) close(s->ep);
        free(s);
        return NULL;
    }
    int64_t end = seconds > 0 ? mono_ns() + (int64_t)(seconds * 1e9) : INF_NS;
    PyObject *result = Py_None;
    struct epoll_event evs[BATCH];
    for (;;) {
        int64_t now, check_at = mono_ns() + CHECK_NS;
        Py_BEGIN_ALLOW_THREADS
        do {
            int n = epoll_wait(s->ep, evs, BATCH, 100);
            for (int i = 0; i < n; i++) {
                if (evs[i].data.fd == listener) accept_all(s);
                else on_ready(s, evs[i].data.fd, evs[i].events);
            }
            now = mono_ns();
        } while (now < check_at && now < end);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0) {
            result = NULL;
            break;
        }
        if (now >= end) break;
    }
    for (size_t fd = 0; fd < s->nbacklog; fd++) /* every client still connected */
        if (s->backlog[fd].open) drop(s, (int)fd);
    free(s->backlog);
    close(s->ep);
    free(s);
    if (result) Py_INCREF(result);
    return result;
}
