# syntax=docker/dockerfile:1
# Both stages must use the same base image: the venv copied from the builder
# points at the interpreter in /usr/local/bin.
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder ---
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /build

# Dependencies first, so code changes do not invalidate this layer.
COPY requirements/prod.lock requirements/prod.lock
RUN pip install -r requirements/prod.lock

# Then the package itself (README*/LICENSE* are optional; pyproject may reference them).
COPY pyproject.toml README* LICENSE* ./
COPY src ./src
RUN pip install --no-deps . \
 && pip check

# ---------------------------------------------------------------- runtime ---
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HTTP_HOST=0.0.0.0 \
    LOG_FORMAT=json

RUN groupadd --gid 10001 app \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir /app \
 && chown app:app /app

# Root-owned and read-only for the app user.
COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Numeric so that Kubernetes runAsNonRoot can verify it.
USER 10001:10001

EXPOSE 8000

# No curl in slim images: use the venv's python. urlopen raises (exit 1) on errors and non-2xx.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HTTP_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["campaign-manager"]
CMD ["run"]
