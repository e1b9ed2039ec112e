"""Interactive Brokers adapter: pure translation of ib_async objects (`translate.py`).

Nothing here imports ib_async, so `import trueup` (and this package) works without the
`ib` extra; only a future `client.py` will need `pip install 'trueup[ib]'`.
"""
