"""Alpaca adapter: pure translation of Alpaca Trading API payloads (`translate.py`).

Nothing here imports alpaca-py, so `import trueup` (and this package) works without the
`alpaca` extra; `client.py` (with its snapshot reads in `reads.py`) and `stream.py` need
`pip install 'trueup[alpaca]'`.
"""
