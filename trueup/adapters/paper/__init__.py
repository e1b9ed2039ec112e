"""Paper broker adapter: a deterministic, persistent, fault-injecting simulated broker.

`translate.py` turns the paper wire JSON (`wire.py`) into reports, purely; `broker.py`
holds `PaperBroker`, the `BrokerClient` whose state lives in its own SQLite file, and
re-exports `FaultPlan` and `Fault` from `faults.py`. Nothing here needs an extra.
"""
