"""(being filled in by the renovation)"""

from __future__ import annotations


class SelectionMixin:
    """Store methods for selection."""
