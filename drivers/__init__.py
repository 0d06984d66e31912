"""Lock-board and input-device drivers.

Nothing in this package knows about parcels, reservations or codes: a driver moves
relays and reads inputs on a bus, and reports what went wrong on the wire.
"""
