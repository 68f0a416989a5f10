# One image for the API and the workers:
#   docker run IMAGE                      -> pocketrun serve
#   docker run IMAGE pocketrun worker ... -> a Celery worker

# --- build: resolve and build wheels with the compilers the slim runtime does not carry ---
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md cli.py ./
COPY core ./core
COPY nodes ./nodes
COPY flows ./flows
COPY workers ./workers
COPY db ./db
COPY api ./api
RUN python -m venv /opt/pocketrun \
 && /opt/pocketrun/bin/pip install --upgrade pip \
 && /opt/pocketrun/bin/pip install .

# --- runtime: the virtualenv only, run as an unprivileged user ---
FROM python:3.11-slim AS runtime
ENV PATH=/opt/pocketrun/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    POCKETRUN_HOST=0.0.0.0 \
    POCKETRUN_PORT=8000
RUN groupadd --system --gid 10001 pocketrun \
 && useradd --system --uid 10001 --gid pocketrun --home-dir /app --shell /usr/sbin/nologin pocketrun \
 && mkdir -p /app \
 && chown pocketrun:pocketrun /app
COPY --from=build /opt/pocketrun /opt/pocketrun
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('POCKETRUN_PORT', '8000')}/healthz\", timeout=2)"]
CMD ["pocketrun", "serve"]
