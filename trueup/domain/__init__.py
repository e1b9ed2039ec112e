"""The pure model: statuses, reports, the Order and Position aggregates and the rules.

Imports only the standard library, msgspec and eventsourcing.domain: no I/O, no SDK.
"""
