# syntax=docker/dockerfile:1
# One image for every Graft process: `graft api`, `graft worker` and `graft migrate`.
#
#   docker build -t graft:cpu .                                  # CPU-only torch (default)
#   docker build -t graft:cu128 --build-arg TORCH_VARIANT=cu128 . # CUDA 12.8 torch, for GPU workers
#
# TORCH_VARIANT names a PyTorch wheel index (cpu, cu126, cu128, ...). torch is installed from that
# index, pinned, BEFORE the project, so that `pip install .` finds `torch>=2.10` already satisfied and
# never pulls an unpinned (default CUDA) torch from PyPI; a constraint file holds it there.
FROM python:3.11-slim

ARG TORCH_VARIANT=cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN echo "torch==2.13.0" > /etc/graft-torch-constraint.txt \
 && pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/${TORCH_VARIANT}

WORKDIR /src
COPY pyproject.toml README.md ./
COPY api/ api/
COPY models/ models/
COPY worker/ worker/
COPY cli/ cli/
COPY migrations/ migrations/
RUN pip install --constraint /etc/graft-torch-constraint.txt . \
 && rm -rf /src/build /src/*.egg-info

# Non-root runtime user. /data is created here and owned by graft so that a fresh named volume
# mounted on it (the shared artifact store in docker-compose.yml) starts out writable by graft.
RUN groupadd --system graft \
 && useradd --system --gid graft --home-dir /home/graft --create-home --shell /usr/sbin/nologin graft \
 && mkdir -p /data \
 && chown graft:graft /data

ENV GRAFT_DATA_DIR=/data
WORKDIR /data
USER graft

EXPOSE 8000
ENTRYPOINT ["graft"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
