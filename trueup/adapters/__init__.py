"""Adapters: broker translation and I/O, and the event store wiring."""
