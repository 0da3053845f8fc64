"""`saeembed serve`: one warm process (models loaded, caches filled) that answers search and similar
over a small token-protected JSON API on loopback; the CLI finds it through a rendezvous file beside
the store and falls back to running locally when it cannot reach it.

Nothing is imported here: the client side (client, rendezvous, wire) must stay free of torch, DuckDB
and the analysis code, so a served search starts as fast as Python and polars do."""
