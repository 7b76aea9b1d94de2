"""Why the Kafka brokers refused a client, in one line that names the setting to fix.

aiokafka's bootstrap logs why each server failed and raises only ``KafkaConnectionError:
Unable to bootstrap`` (``aiokafka/client.py``, ``AIOKafkaClient.bootstrap``), so wrong
credentials, an untrusted CA and a wrong protocol all looked like a broker that was down. When
a client cannot start, :func:`diagnose` connects once more to each bootstrap server the way
aiokafka does (``aiokafka.conn.create_conn``: TLS, API versions, SASL, then a metadata
request), which raises the real error, and :func:`failure_line` says what it means. What was
seen against a real SASL_SSL broker (tests/integration/test_security.py):

* wrong user or password: ``SaslAuthenticationFailed`` with the broker's message;
  a mechanism the broker does not enable: ``UnsupportedSaslMechanismError``;
* a CA that did not sign the broker's certificate: ``ssl.SSLCertVerificationError``
  (``CERTIFICATE_VERIFY_FAILED``, "unable to get local issuer certificate");
* a client without TLS on a TLS listener: ``KafkaConnectionError`` caused by an
  ``IncompleteReadError`` whose "size" is the broker's TLS alert record (0x15030300...);
  TLS on a listener without it: ``ConnectionResetError`` during the handshake; SASL on a
  listener without it: ``IllegalSaslStateError``; no SASL on a SASL listener: the connection
  closed at the first request after API versions;
* nothing listening: ``ConnectionRefusedError`` (the line it always was).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from streams.core.errors import MirrorError
from streams.settings import Settings

#: First bytes of a TLS record (change cipher spec, alert, handshake, data): a client without
#: TLS reads them as the size of a Kafka response.
_TLS_RECORD_TYPES = range(0x14, 0x18)


class Failure(StrEnum):
    """What a broker's refusal means, in the order a diagnosis prefers them."""

    CREDENTIALS = "credentials"
    CERTIFICATE = "certificate"
    PROTOCOL = "protocol"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class Refusal:
    """What one bootstrap server did when connected to as the settings say."""

    address: str
    """The server, ``host:port``."""
    error: BaseException
    """What aiokafka or the TLS layer raised."""
    listening: bool
    """A TCP connection was accepted, so the error came from TLS, SASL or Kafka's protocol."""

    @property
    def failure(self) -> Failure:
        """Classify the error (a pure function of it and ``listening``)."""
        error = self.error
        if isinstance(error, SaslAuthenticationFailed | UnsupportedSaslMechanismError):
            return Failure.CREDENTIALS
        if _is_certificate_error(error):
            return Failure.CERTIFICATE
        if not self.listening or isinstance(error, TimeoutError):
            return Failure.UNREACHABLE  # nothing accepted the connection, or nothing answered
        return Failure.PROTOCOL


def _is_certificate_error(error: BaseException) -> bool:
    if isinstance(error, ssl.SSLCertVerificationError):
        return True
    # The broker's alert about our client certificate (mutual TLS).
    return isinstance(error, ssl.SSLError) and "CERTIFICATE" in str(error.reason or "")


def failure_line(settings: Settings, refusal: Refusal) -> str:
    """Say in one line why the brokers refused, and which setting to fix."""
    failure, address, error = refusal.failure, refusal.address, refusal.error
    if failure is Failure.CREDENTIALS:
        if isinstance(error, UnsupportedSaslMechanismError):
            said = f"{error.description.rstrip('.')} ({settings.kafka_sasl_mechanism})"
        else:
            said = _message(error)
        return (
            f"Kafka at {address} refused the SASL login of KAFKA_SASL_USERNAME "
            f"{settings.kafka_sasl_username!r} with KAFKA_SASL_MECHANISM "
            f"{settings.kafka_sasl_mechanism}: {said}; fix KAFKA_SASL_USERNAME / "
            "KAFKA_SASL_PASSWORD / KAFKA_SASL_MECHANISM"
        )
    if failure is Failure.CERTIFICATE:
        return _certificate_line(settings, address, error)
    if failure is Failure.PROTOCOL:
        seen, use = _protocol_hint(settings.kafka_security_protocol, error)
        return (
            f"Kafka at {address} does not speak KAFKA_SECURITY_PROTOCOL "
            f"{settings.kafka_security_protocol}: {seen}; set KAFKA_SECURITY_PROTOCOL to its "
            f"listener's protocol ({use})"
        )
    return (
        f"cannot reach Kafka at {settings.kafka_broker} ({type(error).__name__}); "
        "start the broker (./run kafka start) or fix KAFKA_BROKER"
    )


def _certificate_line(settings: Settings, address: str, error: BaseException) -> str:
    if not isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"Kafka at {address} refused our TLS client certificate ({_ssl_reason(error)}); "
            "fix KAFKA_SSL_CERTFILE / KAFKA_SSL_KEYFILE"
        )
    verify = error.verify_message or _message(error)
    cafile = settings.kafka_ssl_cafile or "unset, so the system's CAs"
    fix = f"set KAFKA_SSL_CAFILE (now {cafile}) to the CA that signed the brokers' certificates"
    if "mismatch" in verify:
        fix = "use a KAFKA_BROKER host name the broker's certificate names"
    return (
        f"cannot verify the TLS certificate of Kafka at {address}: {error.reason}: {verify}; {fix}"
    )


def _protocol_hint(protocol: str, error: BaseException) -> tuple[str, str]:
    """Return what the listener did and the protocols that fit it."""
    tls = protocol in ("SSL", "SASL_SSL")
    if not tls and _answered_in_tls(error):
        return "it answered in TLS", "SSL or SASL_SSL"
    if isinstance(error, IllegalSaslStateError):
        return "it takes no SASL login", "PLAINTEXT or SSL"
    if tls and isinstance(error, ssl.SSLError | ConnectionResetError | asyncio.IncompleteReadError):
        return "it broke off the TLS handshake", "PLAINTEXT or SASL_PLAINTEXT"
    if not protocol.startswith("SASL") and isinstance(error, KafkaConnectionError):
        return "it closed the connection at the first request", "SASL_PLAINTEXT or SASL_SSL"
    return f"{type(error).__name__}: {_message(error)}", "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"


def _answered_in_tls(error: BaseException) -> bool:
    cause = error.__cause__ or error
    return isinstance(cause, asyncio.IncompleteReadError) and (
        (cause.expected or 0) >> 24 in _TLS_RECORD_TYPES
    )


def _ssl_reason(error: BaseException) -> str:
    return str(getattr(error, "reason", None) or _message(error))


def _message(error: BaseException) -> str:
    """The error's own words: a broker's message without aiokafka's ``[Error n] Name:``."""
    text = str(error.args[0]) if error.args and isinstance(error.args[0], str) else str(error)
    return " ".join(text.split()) or type(error).__name__


def most_telling(refusals: Sequence[Refusal]) -> Refusal | None:
    """Return the refusal that says most (credentials first, unreachable last)."""
    order = list(Failure)
    return min(refusals, key=lambda r: order.index(r.failure), default=None)


async def diagnose(settings: Settings, timeout: float = 10.0) -> Refusal | None:
    """Connect to each bootstrap server as aiokafka does; return the most telling refusal,
    or None when every server takes the connection now."""
    probes = [_probe(settings, address, timeout) for address in settings.broker_hosts]
    refusals = [refusal for refusal in await asyncio.gather(*probes) if refusal is not None]
    return most_telling(refusals)


async def _probe(settings: Settings, address: str, timeout: float) -> Refusal | None:
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        return Refusal(address, exc, listening=False)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    failing = (OSError, KafkaError, TimeoutError, asyncio.IncompleteReadError)
    try:
        conn = await asyncio.wait_for(
            create_conn(
                host,
                int(port),
                client_id="mirror-diagnosis",
                request_timeout_ms=int(timeout * 1000),
                **settings.kafka_client_options(),
            ),
            timeout,
        )
    except failing as exc:
        return Refusal(address, exc, listening=True)
    try:
        # API versions are answered before any login: a SASL listener refuses the next request.
        await asyncio.wait_for(conn.send(MetadataRequest([])), timeout)
    except failing as exc:
        return Refusal(address, exc, listening=True)
    finally:
        conn.close()
    return None


async def broker_failure(settings: Settings, exc: BaseException, timeout: float = 10.0) -> str:
    """Say in one line why a Kafka client failed to start with ``exc``: the diagnosed refusal,
    or else the brokers do not answer."""
    refusal = await diagnose(settings, timeout)
    if refusal is None:  # every server answers now: what failed was passing
        refusal = Refusal(",".join(settings.broker_hosts), exc, listening=False)
    return failure_line(settings, refusal)


async def start_client(
    settings: Settings,
    start: Awaitable[Any],
    close: Callable[[], Awaitable[Any]],
    timeout: float,
) -> None:
    """Await a Kafka client's ``start``; if it fails, ``close`` it and raise
    :class:`MirrorError` with the one line saying why (:func:`broker_failure`)."""
    from aiokafka.errors import KafkaError

    try:
        await asyncio.wait_for(start, timeout=timeout)
    except (KafkaError, OSError, TimeoutError) as exc:
        await close()
        raise MirrorError(await broker_failure(settings, exc, min(timeout, 10.0))) from None
