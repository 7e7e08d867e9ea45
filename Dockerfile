# syntax=docker/dockerfile:1
# One image for web, worker, beat and watch (target `app`), plus a `sandbox` target that adds the EC2
# emulator (moto) for the demo profile of docker-compose.yml. Build: docker build --target app -t eipdash .
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app
WORKDIR /app
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin eipdash

# Dependencies first, from the pins in pyproject.toml, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

FROM base AS app
COPY manage.py ./
COPY eipdash ./eipdash
COPY pools ./pools
COPY workers ./workers
COPY sandbox ./sandbox
COPY templates ./templates
COPY static ./static
COPY deploy/docker-entrypoint.sh /usr/local/bin/eipdash-entrypoint
# The checkout is on PYTHONPATH; this only registers the package metadata (no dependency resolution).
RUN pip install --no-deps -e . \
    # Static files are collected at build time and served by whitenoise: no secret is involved here,
    # the key below only lets settings import.
    && DJANGO_SECRET_KEY=collectstatic-only DATABASE_URL=sqlite:////tmp/build.sqlite3 \
       python manage.py collectstatic --noinput --verbosity 0 \
    && rm -f /tmp/build.sqlite3 \
    && mkdir -p /app/var /srv/sandbox && chown -R eipdash /app/var /srv/sandbox \
    && chmod 0755 /usr/local/bin/eipdash-entrypoint
USER eipdash
EXPOSE 8000
ENTRYPOINT ["eipdash-entrypoint"]
CMD ["gunicorn", "eipdash.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]

# The demo: the EC2 emulator (moto, pinned in the dev extras) on top of the production image.
FROM app AS sandbox
USER root
RUN python -c "import tomllib; print('\n'.join(d for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['dev'] if d.startswith('moto')))" \
        > /tmp/sandbox-requirements.txt \
    && pip install -r /tmp/sandbox-requirements.txt
USER eipdash
