"""Interactive Brokers adapter: wire copies, pure translation, and the ib_async client.

`wire.py` copies ib_async objects into JSON-ready structs, `translate.py` and
`envelope.py` translate them (pure), `client.py` does the I/O (through `connection.py`;
its snapshot and lookup reads in `reads.py`). Only those import ib_async at run time
(`pip install 'trueup[ib]'`); nothing here imports it, so `import trueup` (and this
package) works without the `ib` extra.
"""
