"""(being filled in by the renovation)"""

from __future__ import annotations


class LabelsMixin:
    """Store methods for labels."""
