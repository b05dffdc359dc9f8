"""`campaign-manager config` shows what the service will run with, and never a secret."""

from __future__ import annotations

import pytest

from campaign_manager.cli import main
from campaign_manager.settings import Settings, mask_url_password


@pytest.fixture(autouse=True)
def clean_environment(tmp_path, monkeypatch) -> None:
    # Settings also reads ./.env: run where there is none, with none of its variables set.
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def printed_config(capsys) -> dict[str, str]:
    assert main(["config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_config_prints_every_setting_as_its_environment_variable(capsys) -> None:
    config = printed_config(capsys)

    assert list(config) == [name.upper() for name in Settings.model_fields]
    assert config["SIGNALS_TOPIC"] == "trade-signals"
    assert config["KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert config["CREATE_TOPICS"] == "true"


def test_config_shows_values_from_the_environment_and_masks_every_secret(capsys, monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://campaign:pg-s3cret@db.internal:5432/campaigns")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9093,kafka-2:9093")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "campaign-manager")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "kafka-s3cret")
    monkeypatch.setenv("API_TOKEN", "token-s3cret")
    monkeypatch.setenv("TOPIC_PARTITIONS", "24")

    config = printed_config(capsys)

    assert config["DATABASE_URL"] == "postgresql+asyncpg://campaign:**********@db.internal:5432/campaigns"
    assert config["KAFKA_SASL_USERNAME"] == "campaign-manager"
    assert config["KAFKA_SASL_PASSWORD"] == "**********"
    assert config["API_TOKEN"] == "**********"
    assert config["TOPIC_PARTITIONS"] == "24"
    assert not any("s3cret" in value for value in config.values())


def test_unset_settings_print_empty(capsys) -> None:
    config = printed_config(capsys)

    assert config["DATABASE_URL"] == ""
    assert config["KAFKA_SASL_PASSWORD"] == ""
    assert config["PORTFOLIO_VALUE"] == ""


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+asyncpg://u:p@h:5432/d", "postgresql+asyncpg://u:**********@h:5432/d"),
        ("postgresql://u:p%40ss@h/d?sslmode=require", "postgresql://u:**********@h/d?sslmode=require"),
        ("postgresql://u@h/d?password=p&sslmode=require", "postgresql://u@h/d?password=**********&sslmode=require"),
        ("postgresql://h:5432/d", "postgresql://h:5432/d"),
        ("kafka-1:9093,kafka-2:9093", "kafka-1:9093,kafka-2:9093"),
    ],
)
def test_passwords_inside_urls_are_masked(url: str, masked: str) -> None:
    assert mask_url_password(url) == masked


def test_an_invalid_configuration_exits_with_a_message_naming_the_variable(capsys, monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9093")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "kafka-s3cret")

    assert main(["config"]) == 2

    error = capsys.readouterr().err
    assert "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME" in error
    assert "s3cret" not in error
