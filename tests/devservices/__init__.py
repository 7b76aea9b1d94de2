"""Tests of the local-service tooling (devservices/), apart from the product's tests.

They check that the development broker, cluster and PostgreSQL server are what the product's
tests take them for, and the helpers that start, name and stop them. The ones that talk to a
running service say so with ``pytestmark = pytest.mark.integration``.
"""
