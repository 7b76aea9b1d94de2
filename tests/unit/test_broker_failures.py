"""From what a broker did to the one line saying what to fix (streams/kafka/broker_failures.py).

The errors are built as aiokafka and the ssl module raised them against the real SASL_SSL
broker (tests/integration/test_security.py runs each case against it once).
"""

from __future__ import annotations

import asyncio
import ssl

import pytest
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from streams.kafka.broker_failures import Failure, Refusal, failure_line, most_telling
from streams.settings import Settings

ADDRESS = "127.0.0.1:29092"
SASL_SSL = {
    "KAFKA_BROKER": f"kafka://{ADDRESS}",
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "mirror",
    "KAFKA_SASL_PASSWORD": "s3cret-pw",
}


def settings(**changes: str) -> Settings:
    return Settings.from_env({**SASL_SSL, **changes})


def verify_error(verify_message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(
        1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {verify_message}"
    )
    error.reason = "CERTIFICATE_VERIFY_FAILED"
    error.verify_message = verify_message
    return error


def closed(cause: BaseException) -> KafkaConnectionError:
    error = KafkaConnectionError(f"Connection at {ADDRESS} closed")
    error.__cause__ = cause
    return error


def line(error: BaseException, listening: bool = True, **changes: str) -> str:
    return failure_line(settings(**changes), Refusal(ADDRESS, error, listening))


def test_wrong_credentials_name_the_sasl_settings_and_the_brokers_message() -> None:
    said = (
        "Authentication failed during authentication due to invalid credentials with SASL "
        "mechanism SCRAM-SHA-512"
    )
    assert line(SaslAuthenticationFailed(said)) == (
        f"Kafka at {ADDRESS} refused the SASL login of KAFKA_SASL_USERNAME 'mirror' with "
        f"KAFKA_SASL_MECHANISM SCRAM-SHA-512: {said}; fix KAFKA_SASL_USERNAME / "
        "KAFKA_SASL_PASSWORD / KAFKA_SASL_MECHANISM"
    )
    assert "s3cret-pw" not in line(SaslAuthenticationFailed(said))


def test_a_mechanism_the_broker_does_not_enable_is_a_credentials_line() -> None:
    # aiokafka raises it with the connection as its argument: the description says more.
    error = UnsupportedSaslMechanismError("<AIOKafkaConnection host=127.0.0.1 port=29092>")
    text = line(error, KAFKA_SASL_MECHANISM="SCRAM-SHA-256")
    assert Refusal(ADDRESS, error, True).failure is Failure.CREDENTIALS
    assert "KAFKA_SASL_MECHANISM SCRAM-SHA-256: The broker does not support the requested " in text
    assert "AIOKafkaConnection" not in text and "KAFKA_SASL_PASSWORD" in text


def test_an_untrusted_certificate_names_kafka_ssl_cafile_and_the_verify_error() -> None:
    error = verify_error("unable to get local issuer certificate")
    assert line(error, KAFKA_SSL_CAFILE=__file__) == (
        f"cannot verify the TLS certificate of Kafka at {ADDRESS}: CERTIFICATE_VERIFY_FAILED: "
        f"unable to get local issuer certificate; set KAFKA_SSL_CAFILE (now {__file__}) to the "
        "CA that signed the brokers' certificates"
    )
    assert "KAFKA_SSL_CAFILE (now unset, so the system's CAs)" in line(error)


def test_a_certificate_for_another_host_says_to_use_a_host_it_names() -> None:
    error = verify_error("IP address mismatch, certificate is not valid for '127.0.0.1'.")
    assert line(error).endswith(
        "IP address mismatch, certificate is not valid for '127.0.0.1'.; use a KAFKA_BROKER host "
        "name the broker's certificate names"
    )


def test_a_refused_client_certificate_names_the_client_certificate_settings() -> None:
    error = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert")
    error.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert line(error) == (
        f"Kafka at {ADDRESS} refused our TLS client certificate "
        "(TLSV13_ALERT_CERTIFICATE_REQUIRED); fix KAFKA_SSL_CERTFILE / KAFKA_SSL_KEYFILE"
    )


PROTOCOL_CASES = {
    # client protocol, what aiokafka raised: what the listener did, the protocols that fit
    "TLS answer to a client without TLS": (
        "PLAINTEXT",
        closed(asyncio.IncompleteReadError(b"\x00\x00\x00", 0x15030300 + 0x0200)),
        "it answered in TLS; set KAFKA_SECURITY_PROTOCOL to its listener's protocol "
        "(SSL or SASL_SSL)",
    ),
    "TLS answer to SASL without TLS": (
        "SASL_PLAINTEXT",
        closed(asyncio.IncompleteReadError(b"\x00\x00\x00", 352518912)),
        "it answered in TLS; set KAFKA_SECURITY_PROTOCOL to its listener's protocol "
        "(SSL or SASL_SSL)",
    ),
    "TLS to a listener without it": (
        "SASL_SSL",
        ConnectionResetError(),
        "it broke off the TLS handshake; set KAFKA_SECURITY_PROTOCOL to its listener's "
        "protocol (PLAINTEXT or SASL_PLAINTEXT)",
    ),
    "SASL to a listener without it": (
        "SASL_PLAINTEXT",
        IllegalSaslStateError("<AIOKafkaConnection host=127.0.0.1 port=9092>"),
        "it takes no SASL login; set KAFKA_SECURITY_PROTOCOL to its listener's protocol "
        "(PLAINTEXT or SSL)",
    ),
    "no SASL on a SASL listener": (
        "SSL",
        closed(asyncio.IncompleteReadError(b"", 4)),
        "it closed the connection at the first request; set KAFKA_SECURITY_PROTOCOL to its "
        "listener's protocol (SASL_PLAINTEXT or SASL_SSL)",
    ),
}


@pytest.mark.parametrize("case", sorted(PROTOCOL_CASES))
def test_a_protocol_mismatch_names_kafka_security_protocol(case: str) -> None:
    protocol, error, said = PROTOCOL_CASES[case]
    assert line(error, KAFKA_SECURITY_PROTOCOL=protocol) == (
        f"Kafka at {ADDRESS} does not speak KAFKA_SECURITY_PROTOCOL {protocol}: {said}"
    )


@pytest.mark.parametrize(
    ("error", "listening"),
    [
        (ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)"), False),
        (TimeoutError(), False),
        (TimeoutError(), True),  # accepted, never answered: a broker that is not serving
        (KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1, 0)]"), False),
    ],
)
def test_a_broker_that_does_not_answer_is_the_unreachable_line(
    error: BaseException, listening: bool
) -> None:
    assert line(error, listening) == (
        f"cannot reach Kafka at kafka://{ADDRESS} ({type(error).__name__}); start the broker "
        "(./run kafka start) or fix KAFKA_BROKER"
    )


def test_the_most_telling_refusal_of_several_servers_is_said() -> None:
    down = Refusal("127.0.0.1:1", ConnectionRefusedError(), False)
    wrong = Refusal(ADDRESS, closed(asyncio.IncompleteReadError(b"", 4)), True)
    refused = Refusal(ADDRESS, SaslAuthenticationFailed("no"), True)
    assert most_telling([down, wrong]) == wrong
    assert most_telling([down, wrong, refused]) == refused
    assert most_telling([]) is None
