"""Runnable examples of the Ledger API."""
