"""Interactive Brokers adapter: wire copies (`wire.py`), pure translation (`translate.py`,
`envelope.py`) and the ib_async client (`client.py`).

Only `client.py` imports ib_async (`pip install 'trueup[ib]'`); nothing here imports it,
so `import trueup` (and this package) works without the `ib` extra.
"""
