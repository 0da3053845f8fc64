"""A search with its plan: the features a query is mapped to, then the documents ranked on them."""

from __future__ import annotations

from saeembed.analysis.retrieve import default_mode, plan_query, search, target


def planned_search(st, corpus: str, query, *, mode: str | None, feature, not_feature, where, top: int, n_features: int,
                   match: str, sae, length_control: str = "residual", progress=None):
    """The search behind `saeembed search` and `saeembed report search`: (results, the features
    planned for them; None for a dense search). mode None: hybrid for a query, sae for features only."""
    mode = mode or default_mode(query)
    plan = None
    if mode != "dense":
        t = target(st, corpus, where=where, sae=sae)
        plan = plan_query(st, t, query, features=feature, n_features=n_features, match=match, progress=progress)
    frame = search(st, corpus, query, features=feature, not_features=not_feature, where=where, top=top,
                   mode=mode, plan=plan, sae=sae, length_control=length_control, progress=progress)
    return frame, plan
