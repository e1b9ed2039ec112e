"""Alpaca adapter: pure translation of Alpaca Trading API payloads (`translate.py`).

Nothing here imports alpaca-py, so `import trueup` (and this package) works without the
`alpaca` extra; only a future `client.py` will need `pip install 'trueup[alpaca]'`.
"""
