"""Deterministic aggregate ids: the same broker fact always maps to the same aggregate.

Deterministic ids make ingestion idempotent (a duplicate create is an IntegrityError)
and make reconciliation repeatable (the same snapshot twice stores nothing new).
"""

from __future__ import annotations

import hashlib
from uuid import UUID, uuid5

NAMESPACE = UUID("6f1d2c7e-2f0b-5b8e-9a57-3c1f4d0e7a21")
"""Namespace of every trueup uuid5; changing it would orphan every stored aggregate."""


def order_id(account: str, client_order_id: str) -> UUID:
    """Id of the Order aggregate of `client_order_id` in `account`."""
    return uuid5(NAMESPACE, f"order|{account}|{client_order_id}")


def position_id(account: str, symbol: str) -> UUID:
    """Id of the Position aggregate netting `symbol` in `account`."""
    return uuid5(NAMESPACE, f"position|{account}|{symbol}")


def broker_link_id(account: str, broker_order_id: str) -> UUID:
    """Id of the link from a broker order id to our client order id."""
    return uuid5(NAMESPACE, f"link|{account}|{broker_order_id}")


def discrepancy_id(kind: str, account: str, key: str, evidence: str) -> UUID:
    """Id of a discrepancy: one per kind, subject and piece of evidence."""
    return uuid5(NAMESPACE, f"discrepancy|{kind}|{account}|{key}|{evidence}")


def raw_answer_id(account: str, source: str, kind: str, payload: str) -> UUID:
    """Id of a stored broker answer: its content address (the same answer is stored once)."""
    digest = hashlib.sha256(payload.encode()).hexdigest()
    return uuid5(NAMESPACE, f"answer|{account}|{source}|{kind}|{digest}")


def match_id(account: str, evidence: UUID) -> UUID:
    """Id of the trace that the books of `account` matched the snapshot `evidence`."""
    return uuid5(NAMESPACE, f"matched|{account}|{evidence}")


def external_client_order_id(broker_order_id: str) -> str:
    """Client id given to an order we never sent (no id of ours travelled with it)."""
    return f"~{broker_order_id}"
