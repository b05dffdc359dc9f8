"""How every Kafka client of the service connects: the security settings, translated in one place.

`kafka_security` builds FastStream's security object, which the `KafkaBroker` takes (and shows in its AsyncAPI
document). Plain aiokafka clients (the relay's producer, the admin client, the CLI tools) get their arguments
from the same object through FastStream's own translation, so the two can never disagree.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from campaign_manager.settings import Settings

_SASL = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}


def kafka_security(settings: Settings) -> BaseSecurity | None:
    """None for PLAINTEXT; otherwise TLS and/or SASL as KAFKA_SECURITY_PROTOCOL and its companions say."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = _ssl_context(settings) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context)
    # Settings has checked that SASL_* comes with a mechanism, a username and a password.
    assert settings.kafka_sasl_mechanism and settings.kafka_sasl_username and settings.kafka_sasl_password
    return _SASL[settings.kafka_sasl_mechanism](
        settings.kafka_sasl_username,
        settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=protocol == "SASL_SSL",
    )


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
    return parse_security(kafka_security(settings))


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    # Without a CA file the system's trust store verifies the brokers; hostnames are always checked.
    return create_ssl_context(
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
    )
