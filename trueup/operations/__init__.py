"""Operations: `trueup run`, the reconciliation daemon, its config, endpoint and metrics.

`config` (and `status`) need only the core; `daemon`, `http` and `metrics` need the ops
extra (aiohttp, prometheus_client) and say so when it is missing:
``pip install 'trueup[ops]'``. Nothing here is imported by ``import trueup``.
"""
