"""Amounts: exact decimals, parsed from strings and presented at a scale.

Arithmetic runs in :data:`MONEY` so that a sum can never be silently rounded:
Python's default context keeps only 28 significant digits, which a balance of
38-digit amounts would exceed. Any inexact operation raises instead.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable
from decimal import Decimal

from .codes import InvalidField

MAX_DIGITS = 38
MAX_SCALE = 18

MONEY = decimal.Context(
    prec=200,
    traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Overflow],
)

ZERO = Decimal(0)

#: An amount's syntax (JSON Schema's dialect too): digits, an optional sign and fraction.
AMOUNT_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
_AMOUNT = re.compile(AMOUNT_PATTERN)


def parse_amount(text: str) -> Decimal:
    """Parse a decimal string (``"12.50"``) into an exact :class:`Decimal`.

    Refuses (:class:`InvalidField`) anything but an optional minus sign, digits
    and an optional fraction, with at most :data:`MAX_DIGITS` digits in all: so
    exponents, ``NaN``, ``Infinity``, blanks and non-ASCII digits never pass.
    The sign is kept; whether the amount is positive is a decision, not syntax.
    """
    if not _AMOUNT.fullmatch(text):
        raise InvalidField('must be a decimal string such as "12.50"')
    # Matched: digits, with at most a sign and a point besides.
    digits = len(text) - text.startswith("-") - ("." in text)
    if digits > MAX_DIGITS:
        raise InvalidField(f"has {digits} digits; at most {MAX_DIGITS} are allowed")
    return Decimal(text)


#: The smallest amount at each scale (``0.01`` at 2).
_QUANTA = tuple(Decimal(1).scaleb(-scale) for scale in range(MAX_SCALE + 1))


def at_scale(amount: Decimal, scale: int) -> Decimal:
    """``amount`` with exactly ``scale`` fractional digits (``5.1`` at 2 is
    ``5.10``).

    Raises :class:`decimal.Inexact` if that would round: the ledger never
    holds an amount finer than its account's scale.
    """
    return amount.quantize(_QUANTA[scale], context=MONEY)


def format_amount(amount: Decimal, scale: int) -> str:
    """:func:`at_scale`, in plain notation."""
    return format(at_scale(amount, scale), "f")


#: ``a + b`` and ``a - b`` in :data:`MONEY` (its own methods: called for
#: every balance a transfer moves, and a wrapper's call costs as much again).
add: Callable[[Decimal, Decimal], Decimal] = MONEY.add
sub: Callable[[Decimal, Decimal], Decimal] = MONEY.subtract
