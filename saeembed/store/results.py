"""(being filled in by the renovation)"""

from __future__ import annotations


class ResultsMixin:
    """Store methods for results."""
