# The worker image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY models ./models
COPY tables ./tables
COPY devservices ./devservices
RUN pip install --no-cache-dir .
CMD ["faust", "-A", "streams.app", "worker", "-l", "info"]
