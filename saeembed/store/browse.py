"""(being filled in by the renovation)"""

from __future__ import annotations


class BrowseMixin:
    """Store methods for browse."""
