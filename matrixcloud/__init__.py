"""The project package: a floor every app stands on, and a roof that composes the apps.

The floor imports no domain app (``accounts``, ``runtimes``, ``jobs``,
``models_registry``, ``sandbox``), not even lazily inside a function:

- ``settings``, ``errors``, ``middleware``;
- ``api/``: the API plumbing (authentication, permissions, exceptions, parsers,
  negotiation, schema, the error serializer, the fallback 404/500);
- ``lib/``: small shared libraries (the bus, ids, tokens, crypto, egress, SSE, lanes,
  rate limits, client addresses, pruning's mechanism, the stdlib-only supervisor).

The roof composes the apps; no domain app imports it:

- ``urls``, ``asgi``, ``wsgi``, ``cli`` and ``management`` (``serve``, ``prune``);
- ``console/``: the web console;
- ``importer/``: the importer of the original's database, with ``import_original``;
- ``platform/``: the platform endpoints (health, ready, capabilities, runtimes,
  catalog, policies, storage) and the readiness and storage reports behind them.

``tests/matrixcloud/test_import_graph.py`` checks both rules, and that the apps import
each other without a cycle.
"""
