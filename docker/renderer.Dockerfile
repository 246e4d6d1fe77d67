# syntax=docker/dockerfile:1.7
# synthloop renderer: Blender as a Python module (bpy 4.5 LTS, Cycles on the CPU) in its own
# environment (/opt/venv-render: bpy pins numpy<2) next to the host side of synthloop
# (/opt/venv: planning, compositing, COCO; no torch). Runs `synthloop render` or a Dask worker
# that maps render_shard. Build from the repository root:
#   docker build -f docker/renderer.Dockerfile -t synthloop/renderer:0.1.0 .

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml constraints.txt constraints-render.txt README.md ./
COPY src ./src
RUN python -m venv /opt/venv-render \
 && /opt/venv-render/bin/pip install "pip==25.3" \
 && /opt/venv-render/bin/pip install -c constraints-render.txt "bpy==4.5.4"
# The host side needs no torch: install the package without dependencies, then what
# synthloop.synthesis and the render CLI import, all pinned by constraints.txt
# (cadquery-ocp-novtk: STEP/IGES parts are tessellated host side, before Blender starts).
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install "pip==25.3" \
 && /opt/venv/bin/pip install -c constraints.txt numpy pillow pydantic pyyaml typer click tqdm dask distributed cadquery-ocp-novtk \
 && /opt/venv/bin/pip install --no-deps .

FROM python:3.11.14-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="synthloop-renderer"
# The X/GL client libraries bpy links against (no display is used: Cycles renders on the CPU).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libx11-6=2:1.8.4-2+deb12u2 libxi6=2:1.8-1+b1 libxxf86vm1=1:1.1.4-1+b2 \
      libxfixes3=1:6.0.0-2 libxrender1=1:0.9.10-1.1 libxkbcommon0=1.5.0-1 libsm6=2:1.2.3-1 \
      libgl1=1.6.0-1 libegl1=1.6.0-1 libgomp1=12.2.0-14+deb12u1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 synthloop \
 && useradd --system --uid 10001 --gid synthloop --home-dir /app --create-home --shell /usr/sbin/nologin synthloop \
 && mkdir -p /workspace && chown 10001:10001 /workspace
COPY --from=build /opt/venv-render /opt/venv-render
COPY --from=build /opt/venv /opt/venv
COPY --chown=10001:10001 pipelines /app/pipelines
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    SYNTHLOOP_BLENDER_PYTHON=/opt/venv-render/bin/python
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["synthloop"]
CMD ["render", "synthetic", "--config", "pipelines/demo.yaml", "--workspace", "/workspace"]
