"""sockbench servers: one wire contract (:mod:`servers.protocol`), five concurrency models.

Each backend module exposes ``serve(listener, config, log)``; :mod:`servers.backends`
names them and imports one only when it is chosen (so gevent is imported only by the
gevent backend).
"""
