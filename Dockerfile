# syntax=docker/dockerfile:1
# The rag-ray server image. Runs the embedded default with no settings (Milvus Lite + SQLite under /data, the bundled
# local models, Ray Serve on 0.0.0.0:8000):
#   docker build -t rag-ray .
#   docker run -p 8000:8000 -v rag-data:/data --shm-size=2g rag-ray
# Production settings (MILVUS_URI, DATABASE_URL, SECRET_KEY, APP_ENV=production, providers) come from the environment:
# see compose.yaml, deploy/kuberay/ and README "Deploy". BASE_IMAGE must provide python3.11 (the build and runtime
# stages use the same one, so the venv's interpreter path is valid in both).
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: the locked dependencies and the project, installed into /app/.venv by uv ----
FROM ${BASE_IMAGE} AS build
ARG UV_VERSION=0.13.9
ENV UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
# uv from PyPI (pinned), in its own venv outside the image's runtime stage.
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first: this layer changes only when the lock does.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv sync --frozen --no-dev --no-install-project --python python3
# Then the project itself, as a regular (non-editable) install: the runtime stage needs no source tree.
COPY rag_ray ./rag_ray
COPY deployments ./deployments
COPY jobs ./jobs
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv sync --frozen --no-dev --no-editable --python python3

# ---- runtime: the venv, tini as PID 1, a non-root user ----
FROM ${BASE_IMAGE} AS runtime
# tini reaps the orphans Ray leaves to PID 1 and forwards SIGTERM to the server.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 rag \
    && useradd --uid 10001 --gid rag --home-dir /home/rag --create-home --shell /usr/sbin/nologin rag \
    && mkdir -p /data && chown rag:rag /data
COPY --from=build /app/.venv /app/.venv
COPY docker/entrypoint.sh docker/healthcheck.py /app/docker/
ENV PATH=/app/.venv/bin:$PATH \
    API_HOST=0.0.0.0 \
    API_PORT=8000 \
    RAG_DATA_DIR=/data \
    RAY_ENABLE_UV_RUN_RUNTIME_ENV=0 \
    PYTHONUNBUFFERED=1
WORKDIR /home/rag
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# The local LLM's GGUF converted at build time (rag_ray/llm/local/cache.py): every start then loads it in ~1 s.
RUN python3 -c "from rag_ray.llm.local import TransformersLLM; TransformersLLM()"
VOLUME ["/data"]
EXPOSE 8000
# SIGTERM (docker stop, Kubernetes) stops everything the server started within RAG_SHUTDOWN_GRACE_S (25 s); give the
# container at least that: `docker run --stop-timeout 30`, compose `stop_grace_period: 30s`.
STOPSIGNAL SIGTERM
# Models load on first start (Ray Serve: ~1 min on 2 cores), hence the long start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 CMD ["python3", "/app/docker/healthcheck.py"]
ENTRYPOINT ["tini", "--", "/app/docker/entrypoint.sh"]
CMD ["rag-server"]
