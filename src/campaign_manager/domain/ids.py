"""Identifiers the service creates (campaigns, positions, events): UUIDv7 (RFC 9562).

Time-ordered: ids made together sit together in the primary-key indexes, instead of scattering writes over every
index page as random UUIDs do. Generated from a seeded PRNG rather than os.urandom per id: the syscall cost more
than the rest of id creation; 74 random bits per millisecond are plenty for uniqueness.
"""

from __future__ import annotations

import os
import random
import time
from uuid import UUID

_random = random.Random()  # seeded from os.urandom
os.register_at_fork(after_in_child=_random.seed)  # a forked worker must not repeat its parent's sequence

_MS_MASK = (1 << 48) - 1
_RAND_B_BITS = 62


def new_id() -> UUID:
    milliseconds = time.time_ns() // 1_000_000
    rand = _random.getrandbits(74)
    value = (
        (milliseconds & _MS_MASK) << 80
        | 0x7 << 76  # version 7
        | (rand >> _RAND_B_BITS) << 64  # rand_a: 12 bits
        | 0b10 << 62  # RFC 9562 variant
        | (rand & ((1 << _RAND_B_BITS) - 1))  # rand_b: 62 bits
    )
    return UUID(int=value)
