# syntax=docker/dockerfile:1
# One image for web, worker, beat and watch (target `app`), plus a `sandbox` target that adds the EC2 and
# Kubernetes API emulators for the demo profile of docker-compose.yml. Build: docker build --target app -t eipdash .
# The production image holds no emulator: `app` never copies sandbox/ (only the `sandbox` target does), and
# the package metadata (pyproject's packages.find) leaves sandbox out as well.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app
WORKDIR /app
# Numeric uid/gid 10001, the same as the manifests' runAsUser/runAsGroup, so that runAsNonRoot can be verified.
RUN groupadd --system --gid 10001 eipdash \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin eipdash

# Dependencies first, from the pins in pyproject.toml, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

FROM base AS app
COPY manage.py gunicorn.conf.py ./
COPY eipdash ./eipdash
COPY pools ./pools
COPY workers ./workers
COPY templates ./templates
COPY static ./static
COPY deploy/docker-entrypoint.sh /usr/local/bin/eipdash-entrypoint
# The checkout is on PYTHONPATH; this only registers the package metadata (no dependency resolution).
RUN pip install --no-deps -e . \
    # Static files are collected at build time and served by whitenoise: no secret is involved here,
    # the key and the Redis URL below only let settings import (nothing connects).
    && DJANGO_SECRET_KEY=collectstatic-only-build-time-placeholder-never-used-to-sign DATABASE_URL=sqlite:////tmp/build.sqlite3 \
       REDIS_URL=redis://build-time-placeholder.invalid:6379/0 \
       python manage.py collectstatic --noinput --verbosity 0 \
    && rm -f /tmp/build.sqlite3 \
    && mkdir -p /app/var /srv/sandbox && chown -R 10001:10001 /app/var /srv/sandbox \
    && chmod 0755 /usr/local/bin/eipdash-entrypoint
# Nothing under /app is writable at run time: the containers run with a read-only root filesystem and a
# writable /tmp (celery beat's schedule, the node watch's heartbeat; gunicorn's heartbeat is in /dev/shm).
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["eipdash-entrypoint"]
# The web process; every setting (gthread workers, timeouts, bind on $PORT) is in gunicorn.conf.py.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "eipdash.wsgi:application"]

# The demo: the emulators (sandbox/, and moto pinned in the dev extras) on top of the production image.
FROM app AS sandbox
USER root
RUN python -c "import tomllib; print('\n'.join(d for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['dev'] if d.startswith('moto')))" \
        > /tmp/sandbox-requirements.txt \
    && pip install -r /tmp/sandbox-requirements.txt \
    && rm /tmp/sandbox-requirements.txt
COPY sandbox ./sandbox
# The production settings plus the sandbox app (`manage.py sandbox`), which they leave out.
ENV DJANGO_SETTINGS_MODULE=sandbox.settings
USER 10001:10001
