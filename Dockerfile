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
# Not root. uid 1000 is also the Kafka image's user (appuser), so the Connect worker can read
# the 0600 secrets files `foresight connect apply` writes to the connect-secrets volume.
RUN useradd --uid 1000 --create-home foresight \
 && install -d -o foresight -g foresight -m 0700 /var/lib/foresight/stack/connect/secrets \
 && chown foresight:foresight /var/lib/foresight /var/lib/foresight/stack /var/lib/foresight/stack/connect
USER foresight
ENTRYPOINT []
CMD ["foresight", "--help"]
