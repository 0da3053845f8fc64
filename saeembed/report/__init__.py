"""HTML reports: self-contained pages (inline SVG plots, no network assets) built from analysis frames.

    from saeembed.report import build_diff_report
    build_diff_report("project.duckdb", "support", "reviews").write("diff.html")

or, from frames already in hand: `write_report(diff_page(frame, summary, provenance), "diff.html")`.
"""

from saeembed.report.build import (Report, build_classify_report, build_cluster_report, build_correlate_report,
                                   build_diff_report, build_features_report, build_filter_report, build_search_report)
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
           "classify_page", "filter_page", "Report", "build_features_report", "build_diff_report",
           "build_correlate_report", "build_cluster_report", "build_search_report", "build_classify_report",
           "build_filter_report"]
