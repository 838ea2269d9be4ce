# The parcours worker image (docker-compose.yml builds it for the `worker` service).
FROM python:3.11.11-slim-bookworm

WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY schemas ./schemas
RUN pip install --no-cache-dir ".[rocksdb]"

# Runs as a user of its own, not root; the data folder (RocksDB state, the dispatcher's
# ledger) is its, and a named volume mounted there starts out owned by it too.
RUN useradd --create-home --uid 10001 parcours \
    && mkdir -p /var/lib/parcours && chown parcours:parcours /var/lib/parcours
USER parcours

# The package is installed into site-packages, its configuration and schemas with it.
ENV PARCOURS_DATA_DIR=/var/lib/parcours \
    PARCOURS_METRICS_PORT=9108
EXPOSE 9108
ENTRYPOINT ["parcours"]
CMD ["worker"]
