# sdbot on a GPU host. Build: docker build -t sdbot .   Run: docker compose up -d (see README).
# The token comes only from the environment at run time; it is never baked into the image (.env is in
# .dockerignore). Models are cached in the /models volume and the database lives in the /data volume.

ARG CUDA_BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

# ---- build stage: a virtual environment with a CUDA build of torch and sdbot ----
FROM ${CUDA_BASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, so that code changes rebuild only the last layer. PyPI's Linux torch wheel is the CUDA build.
COPY pyproject.toml README.md ./
# The esrgan extra (spandrel) lets SDBOT_UPSCALER name an ESRGAN-family file mounted into /models.
RUN mkdir sdbot && touch sdbot/__init__.py && pip install ".[esrgan]" && pip uninstall -y sdbot
COPY bot.py ./
COPY sdbot ./sdbot
RUN pip install --no-deps .

# ---- final stage: runtime only (no compilers), non-root ----
FROM ${CUDA_BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 sdbot \
 && mkdir -p /data /models && chown sdbot:sdbot /data /models
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/bot.py /app/bot.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/models \
    SDBOT_DB=/data/sdbot.sqlite3
WORKDIR /app
USER sdbot
VOLUME ["/data", "/models"]
# The bot writes a heartbeat next to its database; the health command checks it is fresh and the bot connected.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10m --retries=3 CMD ["python3", "-m", "sdbot", "health"]
CMD ["python3", "bot.py"]
