"""What the broker's side of a failed TLS connection says, in words a technician can act on.

A refused client certificate shows, with TLS 1.3, only after the handshake: as an alert
on the first read, or, when that alert loses the race with our CONNECT, as a bare EOF or
reset right after the handshake. Both are put into words here (lockerd.sync.mqtt decides
which applies; lockerd.sync.link logs it and shows it in ``lockerctl status``).
"""

from __future__ import annotations

import re
import ssl

# A connection that ends right after a TLS handshake, with no alert, most likely means
# that the broker checked the client certificate (or its absence) after the handshake
# and its alert lost the race with our CONNECT.
CLOSED_AFTER_HANDSHAKE = (
    "the broker closed the connection right after the TLS handshake; it may have refused"
    " this cabinet's certificate (check its expiry and CA)"
)
CLOSED_AFTER_HANDSHAKE_NO_CERTIFICATE = (
    "the broker closed the connection right after the TLS handshake; it may require a"
    " client certificate, and this cabinet has none (enrol it)"
)


def closed_after_handshake(with_certificate: bool) -> str:
    """What a connection ended with no alert right after the handshake most likely means."""
    return CLOSED_AFTER_HANDSHAKE if with_certificate else CLOSED_AFTER_HANDSHAKE_NO_CERTIFICATE


def alert_text(exc: ssl.SSLError) -> str:
    """``SSLV3_ALERT_CERTIFICATE_EXPIRED`` -> ``certificate expired``."""
    reason = str(exc.reason or exc)
    reason = re.sub(r"^(SSLV3|TLSV1|TLSV13)_ALERT_", "", reason)
    return reason.replace("_", " ").lower()[:120]
