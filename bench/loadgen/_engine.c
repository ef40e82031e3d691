/*
 * bench.loadgen._engine: a load engine whose per-connection hot loop is native code.
 *
 * Engine() starts one background thread (see _loop.c) that does all socket I/O with the GIL
 * released. Python adds and removes connections and harvests counts; nothing in Python runs
 * per round trip. The typed face is bench/loadgen/engine.py.
 */
#define _GNU_SOURCE
#include "_engine.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

static const char *KIND_NAMES[NKINDS] = {"timeout", "reset", "refused", "protocol"};
static const char *REQUEST_NAMES[NNAMES] = {"echo", "broadcast"};
static unsigned engine_serial;

typedef struct {
    PyObject_HEAD
    engine_t *e;
} EngineObject;

static void wake(engine_t *e) {
    uint64_t one = 1;
    if (write(e->wake_fd, &one, sizeof one) < 0) { /* the counter is full: already awake */ }
}

static void engine_destroy(engine_t *e) {
    if (e->thread_started) {
        pthread_mutex_lock(&e->lock);
        e->stop = 1;
        pthread_mutex_unlock(&e->lock);
        wake(e);
        pthread_join(e->thread, NULL);
        e->thread_started = 0;
    }
    for (uint32_t s = 0; s < e->table_cap; s++)
        if (e->table[s]) engine_free_conn(e, e->table[s]);
    if (e->ep >= 0) close(e->ep);
    if (e->wake_fd >= 0) close(e->wake_fd);
    free(e->table);
    free(e->free_slots);
    free(e->pending);
    free(e->heap);
    free(e->stats[0]);
    free(e->stats[1]);
    free(e->rxbuf);
    pthread_mutex_destroy(&e->lock);
    pthread_mutex_destroy(&e->harvest_lock);
    pthread_cond_destroy(&e->synced);
    free(e);
}

static engine_t *engine_create(void) {
    engine_t *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->ep = e->wake_fd = -1;
    pthread_mutex_init(&e->lock, NULL);
    pthread_mutex_init(&e->harvest_lock, NULL);
    pthread_cond_init(&e->synced, NULL);
    e->stats[0] = malloc(NNAMES * sizeof(stats_t));
    e->stats[1] = malloc(NNAMES * sizeof(stats_t));
    e->rxbuf = malloc(65536);
    e->ep = epoll_create1(EPOLL_CLOEXEC);
    e->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!e->stats[0] || !e->stats[1] || !e->rxbuf || e->ep < 0 || e->wake_fd < 0) goto fail;
    for (int b = 0; b < 2; b++)
        for (int n = 0; n < NNAMES; n++) stats_reset(&e->stats[b][n]);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    if (epoll_ctl(e->ep, EPOLL_CTL_ADD, e->wake_fd, &ev) < 0) goto fail;
    e->rng = (uint64_t)mono_ns() * 2654435761ULL | 1;
    e->prefix_len = (size_t)snprintf(e->prefix, sizeof e->prefix, "%x.e%u.", (unsigned)getpid(),
                                     __atomic_add_fetch(&engine_serial, 1, __ATOMIC_RELAXED));
    if (pthread_create(&e->thread, NULL, engine_run, e) != 0) goto fail;
    e->thread_started = 1;
    return e;
fail:
    engine_destroy(e);
    return NULL;
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, ":Engine", kwlist)) return NULL;
    EngineObject *self = (EngineObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->e = engine_create();
    if (!self->e) {
        Py_DECREF(self);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return (PyObject *)self;
}

static void Engine_dealloc(EngineObject *self) {
    if (self->e) {
        Py_BEGIN_ALLOW_THREADS
        engine_destroy(self->e);
        Py_END_ALLOW_THREADS
        self->e = NULL;
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static engine_t *open_engine(EngineObject *self) {
    if (!self->e) PyErr_SetString(PyExc_RuntimeError, "the engine is closed");
    return self->e;
}

static void lock_released(pthread_mutex_t *m) {
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(m);
    Py_END_ALLOW_THREADS
}

static int grow(void **p, uint32_t *cap, uint32_t need, size_t item) {
    if (need <= *cap) return 0;
    uint32_t n = *cap ? *cap : 64;
    while (n < need) n *= 2;
    void *q = realloc(*p, (size_t)n * item);
    if (!q) return -1;
    memset((char *)q + (size_t)*cap * item, 0, (size_t)(n - *cap) * item);
    *p = q;
    *cap = n;
    return 0;
}

/* Add a connection (called with the GIL held). Returns its id, or -1 with an exception. */
static long long add_conn(EngineObject *self, int kind, const char *host, int port, int size,
                          double rate, double timeout_s, double silence_s) {
    engine_t *e = open_engine(self);
    if (!e) return -1;
    if (port < 1 || port > 65535 || size < 1 || size > MAX_LINE || rate < 0 || timeout_s <= 0 ||
        silence_s < 0) {
        PyErr_SetString(PyExc_ValueError, "port 1-65535, message_bytes 1-65536, rate >= 0, timeout > 0");
        return -1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    int gai;
    Py_BEGIN_ALLOW_THREADS
    gai = getaddrinfo(host, service, &hints, &res);
    Py_END_ALLOW_THREADS
    if (gai != 0 || !res) {
        PyErr_Format(PyExc_OSError, "cannot resolve %s: %s", host, gai_strerror(gai));
        return -1;
    }
    conn_t *c = calloc(1, sizeof *c);
    if (!c) goto nomem;
    memcpy(&c->addr, res->ai_addr, res->ai_addrlen);
    c->addrlen = res->ai_addrlen;
    c->fd = -1;
    c->heap_idx = -1;
    c->kind = kind;
    c->size = size;
    c->rate = rate;
    c->timeout_ns = (int64_t)(timeout_s * 1e9);
    c->silence_ns = (int64_t)(silence_s * 1e9);
    c->state = ST_NEW;
    c->payload = malloc((size_t)size);
    if (!c->payload) goto nomem;
    memset(c->payload, 'x', (size_t)size);
    c->payload[size - 1] = '\n';
    if (kind == N_ECHO) {
        /* open loop: room for a timeout's worth of lines in flight (a full ring means the
         * oldest is overdue); closed loop: one */
        double most = rate > 0 ? rate * timeout_s + 2 : 1;
        c->ring_cap = 1;
        while (c->ring_cap < most && c->ring_cap < (1u << 20)) c->ring_cap *= 2;
        c->ring = malloc(c->ring_cap * sizeof(int64_t));
        if (!c->ring) goto nomem;
    }
    freeaddrinfo(res);
    res = NULL;
    lock_released(&e->lock);
    uint32_t slot;
    if (e->nfree) {
        slot = e->free_slots[--e->nfree];
    } else {
        /* no slot free: every slot below the high-water mark is in use, so it is nconns */
        slot = e->nconns;
        uint32_t free_cap = e->table_cap; /* free_slots always has the table's capacity */
        if (grow((void **)&e->table, &e->table_cap, slot + 1, sizeof(conn_t *)) < 0 ||
            grow((void **)&e->free_slots, &free_cap, e->table_cap, sizeof(uint32_t)) < 0) {
            pthread_mutex_unlock(&e->lock);
            goto nomem;
        }
    }
    if (grow((void **)&e->pending, &e->pending_cap, e->npending + 1, sizeof(uint32_t)) < 0) {
        e->free_slots[e->nfree++] = slot;
        pthread_mutex_unlock(&e->lock);
        goto nomem;
    }
    c->slot = slot;
    c->gen = ++e->gen_counter;
    e->table[slot] = c;
    e->nconns++;
    e->pending[e->npending++] = slot;
    e->commands++;
    pthread_mutex_unlock(&e->lock);
    wake(e);
    return (long long)(((uint64_t)c->gen << 32) | slot);
nomem:
    if (res) freeaddrinfo(res);
    if (c) {
        free(c->payload);
        free(c->ring);
        free(c);
    }
    PyErr_NoMemory();
    return -1;
}

static PyObject *Engine_add_echo(EngineObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"host", "port", "message_bytes", "rate_per_s", "timeout_s", NULL};
    const char *host;
    int port, size;
    double rate = 0.0, timeout_s = 2.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sii|dd:add_echo", kwlist, &host, &port, &size,
                                     &rate, &timeout_s))
        return NULL;
    long long id = add_conn(self, N_ECHO, host, port, size, rate, timeout_s, 0.0);
    return id < 0 ? NULL : PyLong_FromLongLong(id);
}

static PyObject *Engine_add_broadcast(EngineObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"host", "port", "message_bytes", "rate_per_s", "timeout_s", "silence_s", NULL};
    const char *host;
    int port, size;
    double rate = 0.0, timeout_s = 2.0, silence_s = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sii|ddd:add_broadcast", kwlist, &host, &port,
                                     &size, &rate, &timeout_s, &silence_s))
        return NULL;
    long long id = add_conn(self, N_BROADCAST, host, port, size, rate, timeout_s, silence_s);
    return id < 0 ? NULL : PyLong_FromLongLong(id);
}

static PyObject *Engine_remove(EngineObject *self, PyObject *arg) {
    engine_t *e = open_engine(self);
    if (!e) return NULL;
    unsigned long long id = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred()) return NULL;
    uint32_t slot = (uint32_t)id, gen = (uint32_t)(id >> 32);
    int found = 0;
    lock_released(&e->lock);
    conn_t *c = slot < e->table_cap ? e->table[slot] : NULL;
    if (c && c->gen == gen && !c->removed &&
        grow((void **)&e->pending, &e->pending_cap, e->npending + 1, sizeof(uint32_t)) == 0) {
        c->removed = 1;
        e->pending[e->npending++] = slot;
        e->commands++;
        found = 1;
    }
    pthread_mutex_unlock(&e->lock);
    if (found) wake(e);
    return PyBool_FromLong(found);
}

static PyObject *Engine_set_broadcast(EngineObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"rate_per_s", "silence_s", NULL};
    double rate, silence_s = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "d|d:set_broadcast", kwlist, &rate, &silence_s))
        return NULL;
    engine_t *e = open_engine(self);
    if (!e) return NULL;
    if (rate < 0 || silence_s < 0) {
        PyErr_SetString(PyExc_ValueError, "rate and silence must be >= 0");
        return NULL;
    }
    lock_released(&e->lock);
    e->broadcast_rate = rate;
    e->broadcast_silence_ns = (int64_t)(silence_s * 1e9);
    e->broadcast_dirty = 1;
    e->commands++;
    pthread_mutex_unlock(&e->lock);
    wake(e);
    Py_RETURN_NONE;
}

static PyObject *Engine_sync(EngineObject *self, PyObject *Py_UNUSED(ignored)) {
    engine_t *e = open_engine(self);
    if (!e) return NULL;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&e->lock);
    uint64_t target = e->commands;
    wake(e);
    while (e->commands_done < target && !e->stop) pthread_cond_wait(&e->synced, &e->lock);
    pthread_mutex_unlock(&e->lock);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *buckets_list(const uint64_t *hist) {
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        if (!hist[i]) continue;
        PyObject *pair = Py_BuildValue("(KK)", (unsigned long long)hist_value(i), (unsigned long long)hist[i]);
        if (!pair || PyList_Append(list, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(pair);
    }
    return list;
}

static PyObject *stats_dict(const stats_t *s) {
    PyObject *fail = PyDict_New(), *lat = buckets_list(s->hist), *flat = buckets_list(s->fail_hist);
    if (!fail || !lat || !flat) goto fail;
    for (int k = 0; k < NKINDS; k++) {
        PyObject *v = PyLong_FromUnsignedLongLong(s->fail[k]);
        if (!v || PyDict_SetItemString(fail, KIND_NAMES[k], v) < 0) {
            Py_XDECREF(v);
            goto fail;
        }
        Py_DECREF(v);
    }
    return Py_BuildValue("{s:K,s:N,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:N,s:N}",
                         "requests", (unsigned long long)s->ok, "failures", fail,
                         "bytes", (unsigned long long)s->bytes, "sent", (unsigned long long)s->sent,
                         "lost", (unsigned long long)s->lost, "duplicated", (unsigned long long)s->duplicated,
                         "out_of_order", (unsigned long long)s->out_of_order,
                         "sum_us", (unsigned long long)s->sum_us,
                         "min_us", (unsigned long long)(s->ok ? s->min_us : 0),
                         "max_us", (unsigned long long)s->max_us,
                         "failure_sum_us", (unsigned long long)s->fail_sum_us,
                         "latency_us", lat, "failure_latency_us", flat);
fail:
    Py_XDECREF(fail);
    Py_XDECREF(lat);
    Py_XDECREF(flat);
    return NULL;
}

static PyObject *Engine_harvest(EngineObject *self, PyObject *Py_UNUSED(ignored)) {
    engine_t *e = open_engine(self);
    if (!e) return NULL;
    lock_released(&e->harvest_lock);
    lock_released(&e->lock);
    int old = e->cur;
    e->cur = !old; /* the I/O thread counts into the other buffer from now on */
    pthread_mutex_unlock(&e->lock);
    PyObject *out = PyDict_New();
    for (int n = 0; out && n < NNAMES; n++) {
        PyObject *d = stats_dict(&e->stats[old][n]);
        if (!d || PyDict_SetItemString(out, REQUEST_NAMES[n], d) < 0) Py_CLEAR(out);
        Py_XDECREF(d);
        stats_reset(&e->stats[old][n]);
    }
    pthread_mutex_unlock(&e->harvest_lock);
    return out;
}

static PyObject *Engine_close(EngineObject *self, PyObject *Py_UNUSED(ignored)) {
    engine_t *e = self->e;
    self->e = NULL;
    if (e) {
        Py_BEGIN_ALLOW_THREADS
        engine_destroy(e);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static PyObject *Engine_get_connections(EngineObject *self, void *Py_UNUSED(closure)) {
    engine_t *e = self->e;
    if (!e) return PyLong_FromLong(0);
    lock_released(&e->lock);
    uint32_t n = e->nconns;
    pthread_mutex_unlock(&e->lock);
    return PyLong_FromUnsignedLong(n);
}

static PyObject *Engine_get_closed(EngineObject *self, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(self->e == NULL);
}

static PyMethodDef Engine_methods[] = {
    {"add_echo", (PyCFunction)(void (*)(void))Engine_add_echo, METH_VARARGS | METH_KEYWORDS,
     "add_echo(host, port, message_bytes, rate_per_s=0.0, timeout_s=2.0) -> id\n"
     "One echo connection: closed loop (rate 0, one line in flight) or open loop (lines at fixed "
     "intended times, latency timed from the intended time)."},
    {"add_broadcast", (PyCFunction)(void (*)(void))Engine_add_broadcast, METH_VARARGS | METH_KEYWORDS,
     "add_broadcast(host, port, message_bytes, rate_per_s=0.0, timeout_s=2.0, silence_s=0.0) -> id\n"
     "One room member that sends (rate > 0: lines/s; 0: closed loop, the next line when a receiver "
     "in this engine got the last) and checks every line it receives. silence_s > 0: a room silent "
     "that long counts a timeout."},
    {"set_broadcast", (PyCFunction)(void (*)(void))Engine_set_broadcast, METH_VARARGS | METH_KEYWORDS,
     "set_broadcast(rate_per_s, silence_s=0.0): new rate and silence limit for every broadcast connection."},
    {"remove", (PyCFunction)Engine_remove, METH_O,
     "remove(id) -> bool: close that connection (asynchronously); False if unknown."},
    {"sync", (PyCFunction)Engine_sync, METH_NOARGS,
     "sync(): wait until the engine thread has carried out every add, remove and set so far."},
    {"harvest", (PyCFunction)Engine_harvest, METH_NOARGS,
     "harvest() -> {name: counts}: everything counted since the last harvest, then reset."},
    {"close", (PyCFunction)Engine_close, METH_NOARGS, "close(): stop the thread, close every socket."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"connections", (getter)Engine_get_connections, NULL, "connections added and not yet removed", NULL},
    {"closed", (getter)Engine_get_closed, NULL, "True after close()", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bench.loadgen._engine.Engine",
    .tp_basicsize = sizeof(EngineObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A background thread with epoll that drives line-protocol connections.",
    .tp_new = Engine_new,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
};

static PyObject *bucket_value(PyObject *self, PyObject *arg) {
    unsigned long long us = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred()) return NULL;
    return PyLong_FromUnsignedLongLong(hist_value(hist_index(hist_clamp(us))));
}

static PyMethodDef module_methods[] = {
    {"bucket_value", (PyCFunction)bucket_value, METH_O,
     "bucket_value(us) -> the value harvest() reports for a latency of `us` microseconds."},
    {"echo_server", (PyCFunction)(void (*)(void))sockbench_echo_server, METH_VARARGS | METH_KEYWORDS,
     "echo_server(listen_fd, seconds=0.0): echo every byte received on connections accepted from "
     "listen_fd (one thread, epoll) until `seconds` have passed (0: forever) or a signal handler "
     "raises."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef engine_module = {
    PyModuleDef_HEAD_INIT, "bench.loadgen._engine",
    "The native load engine: per-connection I/O in a C thread with epoll, GIL released.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__engine(void) {
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&engine_module);
    if (!m) return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0 ||
        PyModule_AddIntConstant(m, "HIST_BUCKETS", HIST_BUCKETS) < 0 ||
        PyModule_AddIntConstant(m, "MAX_LINE", MAX_LINE) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
