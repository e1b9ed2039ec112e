"""The event-store wiring: opening a store, encoding its events and reading its log.

- `store`: store URLs, the eventsourcing application and SQL access to its database
  (`Store`, `open_store`), plus the small helpers every reader of that database shares
  (`PAGE_SIZE`, `select_in`, `first`, `as_dict`, `StoreOwner`).
- `codec`: the msgspec mapper the application encodes and decodes events with.
- `log`: the log as `LoggedEvent`s: `read_log` pages what is stored now, the followers
  (`follow_store`) wait for what is appended next.
"""
