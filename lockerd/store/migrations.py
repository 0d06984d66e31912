"""The store's schema, as numbered migrations applied in order at start-up.

``PRAGMA user_version`` records how many have been applied. A migration is never
edited once released: a change is a new entry at the end. A database whose
``user_version`` is above ``len(MIGRATIONS)`` was written by a newer lockerd and
is refused rather than guessed at.
"""

from __future__ import annotations

# Marks the file as a lockerd store (``PRAGMA application_id``), so another SQLite
# file given by mistake is refused instead of being "migrated". ASCII "LOCK".
APPLICATION_ID = 0x4C4F434B

_0001_INITIAL = """
-- The head of the hash chain: one row. It outlives pruned events, so seq never
-- repeats or skips even when the events table has been trimmed.
CREATE TABLE chain_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    -- the latest wall time seen on a clock judged trustworthy (see clock_trusted)
    trusted_wall REAL NOT NULL
);

-- Every event, in seq order. acked = 1 once the broker confirmed it (PUBACK);
-- unacknowledged rows are the outbox. payload is the exact JSON published.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    payload BLOB NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_outbox ON events (seq) WHERE acked = 0;

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE compartments (
    id TEXT PRIMARY KEY,
    size TEXT NOT NULL,
    in_service INTEGER NOT NULL DEFAULT 1,
    service_reason TEXT,
    -- 0 once the compartment is no longer in the configuration file
    configured INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE reservations (
    id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    size TEXT,
    -- the compartment named by the booking, or the one chosen at deposit time
    compartment TEXT,
    compartment_named INTEGER NOT NULL DEFAULT 0,
    code_hash TEXT,
    reserved_until REAL,
    hold_s INTEGER,
    sensitive INTEGER NOT NULL DEFAULT 0,
    cod_amount INTEGER,
    cod_currency TEXT,
    cod_pay_url TEXT,
    paid INTEGER NOT NULL DEFAULT 0,
    code_only INTEGER NOT NULL DEFAULT 0,
    deposited_at REAL,
    deposited_by TEXT,
    expires_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX reservations_code ON reservations (code_hash);
CREATE INDEX reservations_compartment ON reservations (compartment);
CREATE INDEX reservations_state ON reservations (state);

CREATE TABLE barcodes (
    barcode TEXT NOT NULL,
    reservation_id TEXT NOT NULL REFERENCES reservations (id) ON DELETE CASCADE,
    PRIMARY KEY (barcode, reservation_id)
);

CREATE TABLE credentials (
    id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    role TEXT,
    code_hash TEXT,
    badge_hash TEXT,
    valid_until REAL,
    revoked INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE INDEX credentials_code ON credentials (code_hash);
CREATE INDEX credentials_badge ON credentials (badge_hash);

-- Signed commands already handled, by jti, with the acknowledgement to repeat.
CREATE TABLE commands (
    jti TEXT PRIMARY KEY,
    exp REAL NOT NULL,
    ack_json TEXT NOT NULL
);
CREATE INDEX commands_exp ON commands (exp);

-- Keypad (and other input surface) throttle state; survives restarts.
CREATE TABLE throttle (
    surface TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    window_start REAL NOT NULL,
    blocked_until REAL NOT NULL,
    locked_until REAL NOT NULL
);

-- A door pulse's intent is committed before the pulse (crash consistency).
CREATE TABLE unlock_intents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    compartment TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT
);
CREATE INDEX unlock_intents_open ON unlock_intents (id) WHERE outcome IS NULL;
"""

_0002_PENDING_STEPS = """
-- What the close of a door completes (a deposit, a pickup, a collection): one row per
-- compartment with a step under way, written by the transaction that decides the step
-- and deleted by the one that settles it (docs/adr/0007). It replaces the JSON blob
-- the flows kept under settings 'flows.pending', whose rows are carried over here.
CREATE TABLE pending_steps (
    compartment TEXT PRIMARY KEY,
    expect TEXT NOT NULL,
    reservation_id TEXT NOT NULL,
    credential_id TEXT NOT NULL DEFAULT '',
    barcode TEXT NOT NULL DEFAULT '',
    method TEXT NOT NULL DEFAULT 'code',
    -- 1 once the door was seen open: decides crash recovery where no sensor is fitted
    opened INTEGER NOT NULL DEFAULT 0
);
INSERT INTO pending_steps
    (compartment, expect, reservation_id, credential_id, barcode, method, opened)
SELECT j.key,
       json_extract(j.value, '$.expect'),
       json_extract(j.value, '$.reservation_id'),
       coalesce(json_extract(j.value, '$.credential_id'), ''),
       coalesce(json_extract(j.value, '$.barcode'), ''),
       coalesce(json_extract(j.value, '$.method'), 'code'),
       coalesce(json_extract(j.value, '$.opened'), 0)
FROM settings AS s, json_each(s.value) AS j
WHERE s.key = 'flows.pending' AND json_valid(s.value) AND json_type(s.value) = 'object'
  AND json_extract(j.value, '$.expect') IS NOT NULL
  AND json_extract(j.value, '$.reservation_id') IS NOT NULL;
DELETE FROM settings WHERE key = 'flows.pending';
-- The unlock intents still open for a compartment are looked up by compartment when
-- the door's outcome settles them.
CREATE INDEX unlock_intents_open_by_compartment ON unlock_intents (compartment)
    WHERE outcome IS NULL;
"""

_0003_SECOND_FACTOR = """
-- The pickup's second factor ([pickup] second_factor = "phone_last4", docs/adr/0030):
-- the cloud's keyed hash of the last 4 digits of the booking's phone, NULL when none.
ALTER TABLE reservations ADD COLUMN phone_hash TEXT;
-- Code and phone are looked up together, inside this index, so a right code with a wrong
-- phone finds nothing, exactly like a wrong code: the work says nothing about which was wrong.
CREATE INDEX reservations_code_phone ON reservations (code_hash, phone_hash);
"""

_0004_GRACE_PAYMENTS_HANDOVERS = """
-- After parcel.not_taken the code opens only until grace_until (docs/adr/0024); past
-- it the reservation expires and waits for the courier's collection round.
ALTER TABLE reservations ADD COLUMN grace_until REAL;
-- Deadlines are now swept before every code check: each kind of deadline is found by an
-- index of its own, so the sweep costs the parcels that are due, not every parcel held.
CREATE INDEX reservations_hold_ends ON reservations (state, expires_at);
CREATE INDEX reservations_grace_ends ON reservations (state, grace_until);
CREATE INDEX reservations_booking_ends ON reservations (state, reserved_until);
-- Why a remote or technician open completes a pickup: carried to parcel.picked_up.
ALTER TABLE pending_steps ADD COLUMN reason TEXT NOT NULL DEFAULT '';
-- The cloud's confirmation of a cash-on-delivery payment, kept for reconciliation:
-- one reference per order (a second, different one is refused).
CREATE TABLE payments (
    reservation_id TEXT PRIMARY KEY REFERENCES reservations (id) ON DELETE CASCADE,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    ref TEXT NOT NULL,
    confirmed_at REAL NOT NULL
);
-- A person who gave a right code for an unpaid parcel and waits at the cabinet: when
-- the payment is confirmed before ``until`` the door opens for them, on the surface
-- and with the method they used. Past ``until`` (or once they leave) it opens nothing.
CREATE TABLE payment_waits (
    reservation_id TEXT PRIMARY KEY REFERENCES reservations (id) ON DELETE CASCADE,
    surface TEXT NOT NULL,
    method TEXT NOT NULL,
    until REAL NOT NULL
);
"""

_0005_DEPOSIT_CODES_GROUPS_UNBOOKED = """
-- Issue 13, items 3 to 5 (docs/adr/0025). Kept beside the reservations table rather than
-- as columns of it: each is optional, and most bookings have none.
-- A booking's deposit code (keyed hash, purpose "deposit"): typed at the cabinet, it opens
-- the booked compartment for the courier with no login and no barcode.
CREATE TABLE deposit_codes (
    reservation_id TEXT PRIMARY KEY REFERENCES reservations (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL
);
CREATE INDEX deposit_codes_hash ON deposit_codes (code_hash);
-- Bookings of one pickup group that share their pickup code are picked up together: one
-- code (or QR token) opens every door of the group, one after another.
CREATE TABLE pickup_groups (
    reservation_id TEXT PRIMARY KEY REFERENCES reservations (id) ON DELETE CASCADE,
    group_id TEXT NOT NULL
);
CREATE INDEX pickup_groups_group ON pickup_groups (group_id);
-- A parcel a logged-in courier deposited with no booking: its waybill and compartment,
-- until the cloud books its recipient (reservation.upsert), which turns it into a ready
-- booking in that very compartment.
CREATE TABLE unbooked_parcels (
    barcode TEXT PRIMARY KEY,
    compartment TEXT NOT NULL UNIQUE,
    credential_id TEXT NOT NULL,
    deposited_at REAL NOT NULL
);
"""

_0006_RETURNS_AND_REACH = """
-- How high each compartment's door is (config ``reach``: low, middle, high; NULL when the
-- config does not say), so the allocator can keep accessible bookings within reach.
ALTER TABLE compartments ADD COLUMN reach TEXT;
-- A booking that asked for a compartment within reach (reservation.upsert ``accessible``).
ALTER TABLE reservations ADD COLUMN accessible INTEGER NOT NULL DEFAULT 0;
-- The jti of the signed return label that made this booking at the cabinet, NULL for the
-- cloud's own bookings; the label reopens only its own booking (docs/adr/0027).
ALTER TABLE reservations ADD COLUMN return_label TEXT;
"""

MIGRATIONS: tuple[str, ...] = (
    _0001_INITIAL,
    _0002_PENDING_STEPS,
    _0003_SECOND_FACTOR,
    _0004_GRACE_PAYMENTS_HANDOVERS,
    _0005_DEPOSIT_CODES_GROUPS_UNBOOKED,
    _0006_RETURNS_AND_REACH,
)
