"""HTML reports: self-contained pages (inline SVG plots, no network assets) built from analysis frames.

    from saeembed.report import diff_page, write_report
    write_report(diff_page(frame, summary, provenance), "diff.html")
"""

from saeembed.report.html import write_report
from saeembed.report.pages import (
    classify_page,
    cluster_page,
    correlate_page,
    diff_page,
    features_page,
    filter_page,
    search_page,
)

__all__ = ["write_report", "features_page", "diff_page", "correlate_page", "cluster_page", "search_page",
           "classify_page", "filter_page"]
