# Foresight's processes (worker, sink, gateway, simulator, CLI) for docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams streams
COPY schemas schemas
COPY models models
COPY connectors connectors
COPY deploy deploy
RUN pip install --no-cache-dir .
ENTRYPOINT []
CMD ["foresight", "--help"]
