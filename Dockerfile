# The parcours worker image (docker-compose.yml builds it for the `worker` service).
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY schemas ./schemas
RUN pip install --no-cache-dir ".[rocksdb]"

# The package is installed into site-packages; its schemas stay here.
ENV PARCOURS_SCHEMAS_DIR=/app/schemas \
    PARCOURS_DATA_DIR=/var/lib/parcours \
    PARCOURS_METRICS_PORT=9108
EXPOSE 9108
ENTRYPOINT ["parcours"]
CMD ["worker"]
