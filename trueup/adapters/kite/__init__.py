"""Kite adapter: Zerodha Kite Connect v3 through kiteconnect.

Pure translation in `translate.py` (payloads -> reports), `groups.py` (slices of one tag
as one logical order), `readers.py` (the decoders and field readers both share) and
`ids.py` / `wire.py`; the postback receiver in `postback.py` (stdlib only); the I/O in
`client.py` (`KiteClient`), which composes `transport.py` (kiteconnect's calls, the only
module that imports kiteconnect), `reads.py`, `params.py`, `inbox.py` and `updates.py`.
Nothing here imports the SDK on package import, so `import trueup` (and this package)
works without the `kite` extra; `client.py`, `transport.py` and `reads.py` need `pip
install 'trueup[kite]'`.
"""
