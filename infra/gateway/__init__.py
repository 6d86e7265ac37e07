"""``tierflow serve``: an OpenAI-compatible HTTP front door to a running pipeline.

* :mod:`infra.gateway.shapes` — pure: OpenAI bodies in, tierflow requests out; results in,
  OpenAI responses and errors out.
* :mod:`infra.gateway.results` — one results reader per server process.
* :mod:`infra.gateway.ledger` — budgets and idempotent calls on ``<ns>.ledger``, shared by every process.
* :mod:`infra.gateway.app` — the Starlette app (``build_app``).
* :mod:`infra.gateway.pool` — ``serve --workers N``: server processes sharing one port.
"""
