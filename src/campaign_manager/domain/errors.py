"""Errors the campaign rules raise. Each carries a message a trader can read."""

from __future__ import annotations


class DomainError(Exception):
    """A campaign rule was broken."""


class RuleViolation(DomainError):
    """A well-formed signal breaks a business rule: it is recorded and announced as rejected, never applied."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidStatusTransition(DomainError):
    def __init__(self, from_status: str, to_status: str) -> None:
        super().__init__(f"Invalid status transition: {from_status} -> {to_status}")
        self.from_status = from_status
        self.to_status = to_status
