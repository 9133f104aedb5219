"""Phone numbers for pairing by code: strict E.164 validation and a masked form for records.

A phone number is personal data: it travels only in the mailbox command the
owner reads; records, events and logs carry :func:`mask_phone`'s form.
"""

from __future__ import annotations

import phonenumbers

from shared.errors import InvalidInput


def normalize_e164(raw: object) -> str:
    """Return ``raw`` as E.164 (``+6281234567890``) if it is a valid number, else InvalidInput."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput("phone is required for method phone", field="phone")
    text = raw.strip()
    if not text.startswith("+"):
        raise InvalidInput(
            "phone must be in E.164 form with the country code, such as +6281234567890",
            field="phone",
        )
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise InvalidInput("phone is not a phone number; use E.164 such as +6281234567890",
                           field="phone") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput("phone is not a valid number for its country code", field="phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(e164: str) -> str:
    """``+6281234567890`` -> ``+62*******7890``: enough to recognise, not to dial."""
    digits = e164.lstrip("+")
    keep_head, keep_tail = min(2, len(digits)), min(4, max(0, len(digits) - 2))
    hidden = len(digits) - keep_head - keep_tail
    return "+" + digits[:keep_head] + "*" * hidden + digits[len(digits) - keep_tail:]
