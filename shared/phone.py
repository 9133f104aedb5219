"""Phone numbers for pairing by code: strict E.164 syntax and a masked form for records.

A phone number is personal data: it travels only in the mailbox command the
owner reads; records, events and logs carry :func:`mask_phone`'s form.
"""

from __future__ import annotations

import re

from shared.errors import InvalidInput

#: E.164: "+", a country code (no leading 0), 7 to 15 digits in all; no spaces. The
#: OpenAPI document states the same pattern, so a body valid by it is accepted here.
E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def normalize_e164(raw: object) -> str:
    """Return ``raw`` if it is an E.164 number (``+6281234567890``), else InvalidInput.

    Syntax only: whether the number exists is WhatsApp's to say, and a pairing with
    one it does not know ends ``failed`` with its reason.
    """
    if not isinstance(raw, str) or not raw:
        raise InvalidInput("phone is required for method phone", field="phone")
    if not E164.fullmatch(raw):
        raise InvalidInput(
            "phone must be in E.164 form: + and the country code, 7 to 15 digits, no spaces, "
            "such as +6281234567890",
            field="phone",
        )
    return raw


def mask_phone(e164: str) -> str:
    """``+6281234567890`` -> ``+62*******7890``: enough to recognise, not to dial."""
    digits = e164.lstrip("+")
    keep_head, keep_tail = min(2, len(digits)), min(4, max(0, len(digits) - 2))
    hidden = len(digits) - keep_head - keep_tail
    return "+" + digits[:keep_head] + "*" * hidden + digits[len(digits) - keep_tail:]
