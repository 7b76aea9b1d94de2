"""A Kafka broker that speaks only SASL_SSL, to test the worker's security settings for real.

One node from the same jars as ``devservices.kafka`` (Kafka 4.4.0, KRaft), whose client
listener is ``SASL_SSL://127.0.0.1:29092``: TLS with a certificate for 127.0.0.1 signed by a
test CA made here with trustme, and SCRAM-SHA-512 for the user ``mirror``. KRaft keeps SCRAM
credentials in its metadata log, so the user is created when the storage is formatted
(``kafka-storage format --add-scram``); nothing could authenticate to add it later. The broker
reaches itself on the same listener as that user; the controller listener (29093) stays
PLAINTEXT on loopback.

Files, made once under ``.cache/kafka/secure/tls/``: ``ca.pem`` (what clients trust:
``KAFKA_SSL_CAFILE``) and ``server.pem`` (the broker's PKCS#8 key and certificate chain, read
as a PEM keystore). For development only: the password is a constant of this module.

Command line: ``python -m devservices kafka start --secure`` prints the client settings as
``export`` lines; ``stop --secure``, ``reset --secure``.
"""

from __future__ import annotations

import os
import shlex
import ssl
from pathlib import Path
from typing import Any

from devservices import kafka
from devservices.kafka import HOST, KafkaDevError, Layout, Node

#: Client (SASL_SSL) port; the controller listens on the next one.
SECURE_PORT = 29092
SASL_MECHANISM = "SCRAM-SHA-512"
SASL_USERNAME = "mirror"
#: A development broker's password, on loopback only.
SASL_PASSWORD = "mirror-dev-secret"


class SecureLayout(Layout):
    """The single node with a SASL_SSL client listener (SCRAM-SHA-512 over TLS)."""

    def prepare(self, folder: Path) -> None:
        """Make the test CA and the server's certificate once (trustme)."""
        tls = folder / "tls"
        if (tls / "ca.pem").exists() and (tls / "server.pem").exists():
            return
        try:
            import trustme
            from cryptography.hazmat.primitives import serialization
        except ImportError:
            raise KafkaDevError(
                "the secure broker's certificates need trustme: pip install -e '.[test]'"
            ) from None
        ca = trustme.CA()
        leaf = ca.issue_cert(HOST, "localhost")
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
        # Kafka's PEM keystore reads PKCS#8 keys only; trustme writes the traditional format.
        pkcs8 = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        tls.mkdir(parents=True, exist_ok=True)
        _write(tls / "server.pem", pkcs8 + chain, mode=0o600)
        _write(tls / "ca.pem", ca.cert_pem.bytes(), mode=0o644)  # last: it marks both made

    def listener_properties(self, node: Node) -> list[str]:
        tls = kafka.layout_dir(self) / "tls"
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{SASL_USERNAME}" password="{SASL_PASSWORD}";'
        )
        return [
            f"listeners=SASL_SSL://{HOST}:{node.broker_port},"
            f"CONTROLLER://{HOST}:{node.controller_port}",
            f"advertised.listeners=SASL_SSL://{HOST}:{node.broker_port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=SASL_SSL",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            f"sasl.enabled.mechanisms={SASL_MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={SASL_MECHANISM}",
            f"listener.name.sasl_ssl.{SASL_MECHANISM.lower()}.sasl.jaas.config={jaas}",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={tls / 'server.pem'}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={tls / 'ca.pem'}",
        ]

    def format_arguments(self) -> list[str]:
        return ["--add-scram", f"{SASL_MECHANISM}=[name={SASL_USERNAME},password={SASL_PASSWORD}]"]

    def client_options(self) -> dict[str, Any]:
        return {
            "security_protocol": "SASL_SSL",
            "ssl_context": ssl.create_default_context(cafile=str(ca_file())),
            "sasl_mechanism": SASL_MECHANISM,
            "sasl_plain_username": SASL_USERNAME,
            "sasl_plain_password": SASL_PASSWORD,
        }


SECURE = SecureLayout("secure", 1, SECURE_PORT)


def _write(path: Path, data: bytes, *, mode: int) -> None:
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    os.chmod(partial, mode)
    partial.replace(path)


def ca_file() -> Path:
    """Return the test CA's certificate (PEM), which clients of the secure broker trust."""
    return kafka.layout_dir(SECURE) / "tls" / "ca.pem"


def start(*, timeout: float = 120.0) -> str:
    """Start the secure broker unless it is up and answers; return its bootstrap address."""
    return kafka.start(SECURE, timeout=timeout)


def stop(*, wipe: bool = False) -> None:
    """Stop the secure broker; ``wipe`` deletes its data and certificates."""
    kafka.stop(SECURE, wipe=wipe)


def is_running() -> bool:
    """Say whether the secure broker's process is alive (no protocol check)."""
    return kafka.is_running(SECURE)


def client_settings() -> dict[str, str]:
    """Return the security settings (environment variables) of a client of the secure broker."""
    return {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": SASL_MECHANISM,
        "KAFKA_SASL_USERNAME": SASL_USERNAME,
        "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        "KAFKA_SSL_CAFILE": str(ca_file()),
    }


def exports(bootstrap: str) -> str:
    """Return KAFKA_BROKER and :func:`client_settings` as shell ``export`` lines."""
    settings = {"KAFKA_BROKER": f"kafka://{bootstrap}", **client_settings()}
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in settings.items())
