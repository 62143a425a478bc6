import os

# Under `uv run`, Ray would otherwise re-create the uv environment for every worker from the current
# directory; our workers share the driver's interpreter (local) or the cluster image (cluster.yaml).
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
