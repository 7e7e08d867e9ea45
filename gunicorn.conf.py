"""gunicorn settings of eipdash's web process, in one place for the Procfile, docker-compose.yml, the
Dockerfile and deploy/kubernetes/web.yaml. The one way to start the web process:

    gunicorn -c gunicorn.conf.py eipdash.wsgi:application

Why gthread and not the default sync worker: gunicorn's `timeout` kills a worker whose heartbeat file has
not been touched for that long. A sync worker touches it only between requests, so any response that takes
longer than `timeout` (the full audit export of a large history) was killed mid-stream and the client got a
silently short file. A gthread worker serves requests on a thread pool while its main loop touches the
heartbeat about every second, so `timeout` only catches a worker that is truly stuck, never a long response.

Tune with the environment: PORT (default 8000), WEB_CONCURRENCY (processes, default 2), GUNICORN_THREADS
(threads per process, default 4), or any gunicorn flag through GUNICORN_CMD_ARGS or on the command line
(both override this file), e.g. GUNICORN_CMD_ARGS="--bind 127.0.0.1:8000".
"""

from __future__ import annotations

import os

bind = [f"0.0.0.0:{os.environ.get('PORT', '8000')}"]
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads per process: concurrent requests per process. A long export holds one thread, not the process.
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# A worker whose main loop has not checked in for this long is stuck (gthread checks in every second).
timeout = 30
# On SIGTERM (a rollout), requests in flight get this long to finish before the worker is killed.
graceful_timeout = 30
keepalive = 5
# The heartbeat file lives in memory where there is one: on a container's overlay or a read-only root
# filesystem, /tmp may be slow or absent, and a stalled heartbeat write reads as a stuck worker.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = "-"
errorlog = "-"
# gunicorn 25+ opens a control socket in $HOME/.gunicorn by default: eipdash does not use it, $HOME is
# read-only in the containers, and two servers on one machine would share the path.
control_socket_disable = True
