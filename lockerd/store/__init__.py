"""The durable store: one SQLite file, the single source of truth of the cabinet.

Every domain action is one transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``) that
changes state *and* appends its events to the hash chain; nothing is published
or shown before it commits. ``seq`` lives in the database (``chain_head``), so it
never repeats and never skips across restarts, and survives pruning of old
events. WAL journal with ``synchronous=FULL``: a committed deposit survives a
power cut (docs/adr/0011-store-sqlite-wal-full.md).

The connection is opened in autocommit mode and wrapped by sqlite-utils for its
introspection helpers; transactions are ours, explicit, and never nested.
"""

from .database import DATABASE_NAME, Store
from .results import (
    Applied,
    ApplyStatus,
    ChainReport,
    CodeOutcome,
    CodeVerdict,
    CompartmentSyncReport,
    Credential,
    CredentialGrant,
    CredentialRole,
    StoreError,
    UnlockIntent,
)
from .transaction import Transaction

__all__ = [
    "DATABASE_NAME",
    "Applied",
    "ApplyStatus",
    "ChainReport",
    "CodeOutcome",
    "CodeVerdict",
    "CompartmentSyncReport",
    "Credential",
    "CredentialGrant",
    "CredentialRole",
    "Store",
    "StoreError",
    "Transaction",
    "UnlockIntent",
]
