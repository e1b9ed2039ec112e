"""The use cases over one open store: no broker I/O, no threads.

- `unit_of_work`: `UnitOfWork` (what one use case loads and changes) and `Writer` (runs
  it in one transaction, the one owner of reload-and-retry on a conflict);
- `booking`: broker reports booked through the rules (`ingest`, `ingest_raw`,
  `apply_report`);
- `findings`: discrepancies recorded once, open ones resolved;
- `orders`: intend, mark submitted, abandon, declare lost;
- `gatekeeping`: the gate of each account;
- `reconciler`: books against a broker snapshot;
- `books`: `Books`, the documented Ledger calls over the above.

Layers: this package imports the domain, the adapters' event-store wiring and the
projections; `trueup.ledger`, `trueup.submission` and `trueup.service` build on it.
"""
