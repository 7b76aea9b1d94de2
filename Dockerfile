# The worker image used by docker-compose.yml. Python 3.11, the version requirements.lock is
# compiled for.
FROM python:3.11-slim
WORKDIR /app
# The locked dependencies first, each checked against its hashes (this layer changes only
# with the lock); nothing is resolved at build time.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
# The product only (pyproject.toml's packages): not the local services, the bench or the tests.
# README.md is the package's long description; LICENSE goes into its metadata.
COPY pyproject.toml README.md LICENSE ./
COPY streams ./streams
COPY models ./models
COPY tables ./tables
# The project itself, built by the locked setuptools, without resolving its dependencies again;
# pip check fails the build if the lock no longer satisfies pyproject.toml.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && pip check
# No -l: the app applies LOG_LEVEL and LOG_FORMAT itself, from the first log line.
CMD ["faust", "-A", "streams.app", "worker"]
