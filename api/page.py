"""The pairing page at /pair (placeholder until the page lands)."""

from __future__ import annotations

from flask import Blueprint

page = Blueprint("page", __name__)
