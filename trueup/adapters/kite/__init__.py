"""Kite adapter: pure translation of Zerodha Kite Connect v3 payloads (`translate.py`).

Nothing here imports kiteconnect, so `import trueup` (and this package) works without the
`kite` extra; only a future `client.py` will need `pip install 'trueup[kite]'`.
"""
