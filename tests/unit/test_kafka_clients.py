"""Kafka security settings become the same client arguments for the FastStream broker and plain aiokafka clients."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import certifi
import pytest
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import ValidationError

from campaign_manager.messaging import kafka_clients
from campaign_manager.messaging.kafka_clients import client_options, kafka_security
from campaign_manager.settings import Settings


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, kafka_bootstrap_servers="broker-1:9093,broker-2:9093", **values)


def sasl(protocol: str = "SASL_SSL", mechanism: str = "SCRAM-SHA-512", **values: Any) -> Settings:
    return settings(
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="campaign-manager",
        kafka_sasl_password="s3cret",
        **values,
    )


def test_plaintext_is_the_default_and_adds_no_client_arguments() -> None:
    assert kafka_security(settings()) is None
    assert client_options(settings()) == {}


@pytest.mark.parametrize(
    ("mechanism", "security_class"),
    [("PLAIN", SASLPlaintext), ("SCRAM-SHA-256", SASLScram256), ("SCRAM-SHA-512", SASLScram512)],
)
def test_each_sasl_mechanism_becomes_its_faststream_security_object(mechanism: str, security_class: type) -> None:
    security = kafka_security(sasl(mechanism=mechanism))

    assert type(security) is security_class
    assert (security.username, security.password) == ("campaign-manager", "s3cret")
    assert security.use_ssl


def test_sasl_ssl_gives_aiokafka_the_mechanism_credentials_and_a_verifying_tls_context() -> None:
    options = client_options(sasl())

    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("campaign-manager", "s3cret")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_sasl_plaintext_sends_credentials_without_tls() -> None:
    options = client_options(sasl(protocol="SASL_PLAINTEXT", mechanism="PLAIN"))

    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "PLAIN"
    assert options["ssl_context"] is None


def test_ssl_verifies_brokers_with_the_configured_ca_file() -> None:
    options = client_options(settings(kafka_security_protocol="SSL", kafka_ssl_cafile=certifi.where()))

    assert options["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in options
    assert options["ssl_context"].get_ca_certs()  # the bundle was loaded


def test_client_certificate_and_key_files_go_into_the_tls_context(tmp_path: Path, monkeypatch) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("certificate")
    key.write_text("key")
    calls: list[dict[str, Any]] = []

    def fake_create_ssl_context(**kwargs: Any) -> ssl.SSLContext:
        calls.append(kwargs)
        return ssl.create_default_context()

    monkeypatch.setattr(kafka_clients, "create_ssl_context", fake_create_ssl_context)

    security = kafka_security(
        settings(kafka_security_protocol="SSL", kafka_ssl_certfile=str(cert), kafka_ssl_keyfile=str(key))
    )

    assert type(security) is BaseSecurity and security.use_ssl
    assert calls == [{"cafile": None, "certfile": cert, "keyfile": key}]


def test_the_broker_gives_its_consumers_the_same_security() -> None:
    from campaign_manager.app import build_broker

    broker = build_broker(sasl(), "broker-1:9093")

    consumer_arguments = broker.config.broker_config.builder.keywords
    assert consumer_arguments["security_protocol"] == "SASL_SSL"
    assert consumer_arguments["sasl_mechanism"] == "SCRAM-SHA-512"
    assert consumer_arguments["sasl_plain_password"] == "s3cret"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"},
            "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM, KAFKA_SASL_PASSWORD",
        ),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN", "kafka_sasl_password": ""},
            "needs KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD",
        ),
        (
            {"kafka_sasl_username": "u", "kafka_sasl_password": "p"},
            "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use SASL",
        ),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": "p",
                "kafka_ssl_cafile": certifi.where(),
            },
            "KAFKA_SSL_CAFILE set, but KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does not use TLS",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": certifi.where()},
            "KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE",
        ),
        ({"kafka_security_protocol": "SASL_SCRAM"}, "kafka_security_protocol"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/no/such/ca.pem"}, "does not point to a file"),
    ],
)
def test_inconsistent_security_settings_are_refused_with_a_message_naming_the_variables(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**values)


def test_security_needs_a_real_broker_because_the_embedded_one_speaks_plaintext_only() -> None:
    with pytest.raises(ValidationError, match="needs KAFKA_BOOTSTRAP_SERVERS"):
        Settings(_env_file=None, kafka_security_protocol="SSL")
