"""(being filled in by the renovation)"""

from __future__ import annotations


class ScanMixin:
    """Store methods for scan."""
