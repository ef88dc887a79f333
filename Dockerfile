# One image for the worker, Flower and the emulator (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY pyproject.toml README.md /src/
COPY orchestration /src/orchestration
COPY emulator /src/emulator
COPY workers /src/workers
COPY stack /src/stack
COPY quorum_cli /src/quorum_cli
RUN pip install /src && rm -rf /src \
    && useradd --create-home --uid 10001 --user-group quorum

USER quorum
WORKDIR /home/quorum
CMD ["celery", "-A", "workers.app", "worker", "-l", "INFO"]
