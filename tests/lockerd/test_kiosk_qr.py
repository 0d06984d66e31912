"""QR pickup tokens: real Ed25519 signatures, real store for single use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from lockerd.clock import ManualClock
from lockerd.qr import QrPickup, QrRefusal, QrRejected, QrVerifier
from lockerd.store import Store
from lockerd.sync.commands import TrustStore

NOW = 1_790_000_000
CLOUD = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
VERIFIER = QrVerifier("CAB-1", "cloud", TrustStore({"k1": CLOUD.public_key()}))


def token(key: Ed25519PrivateKey = CLOUD, kid: str = "k1", **over: Any) -> str:
    claims = {
        "iss": "cloud",
        "aud": "CAB-1",
        "sub": "R-1",
        "typ": "pickup",
        "jti": "j-1",
        "exp": NOW + 300,
    }
    claims.update(over)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


def test_good_token() -> None:
    assert VERIFIER.check(token(), NOW) == QrPickup("R-1", "j-1", float(NOW + 300))


@pytest.mark.parametrize(
    ("made", "reason"),
    [
        (lambda: token(key=OTHER), QrRefusal.BAD_SIGNATURE),
        (lambda: token(kid="k2"), QrRefusal.UNKNOWN_KID),
        (lambda: token(aud="CAB-2"), QrRefusal.WRONG_AUDIENCE),
        (lambda: token(iss="evil"), QrRefusal.WRONG_ISSUER),
        (lambda: token(typ="command"), QrRefusal.WRONG_TYPE),
        (lambda: token(typ=None), QrRefusal.WRONG_TYPE),
        (lambda: token(exp=NOW - 60), QrRefusal.EXPIRED),
        (lambda: token(exp="soon"), QrRefusal.MALFORMED),
        (lambda: token(exp=NOW + 365 * 86400), QrRefusal.MALFORMED),
        (lambda: token(sub=None), QrRefusal.MALFORMED),
        (lambda: token(jti=None), QrRefusal.MALFORMED),
        (lambda: jwt.encode({"typ": "pickup"}, None, algorithm="none"), QrRefusal.MALFORMED),
        (
            lambda: jwt.encode(
                {"typ": "pickup", "aud": "CAB-1"},
                "a shared secret 32 bytes long...",  # the algorithm is refused, not the key
                algorithm="HS256",
                headers={"kid": "k1"},
            ),
            QrRefusal.MALFORMED,
        ),
        (lambda: "PARCEL-1", QrRefusal.MALFORMED),
    ],
)
def test_bad_tokens(made: Any, reason: QrRefusal) -> None:
    assert VERIFIER.check(made(), NOW) == QrRejected(reason)


def test_each_token_opens_once_even_after_a_restart(tmp_path: Path) -> None:
    clock = ManualClock(wall=NOW)
    store = Store.open(tmp_path / "db", "CAB-1", clock)
    with store.transaction() as tx:
        assert isinstance(VERIFIER.redeem(tx, token(), NOW), QrPickup)
    store.close()
    store = Store.open(tmp_path / "db", "CAB-1", clock)
    with store.transaction() as tx:
        assert VERIFIER.redeem(tx, token(), NOW) == QrRejected(QrRefusal.ALREADY_USED)
        # a forged token with a real jti does not burn it, and is refused for its signature
        assert VERIFIER.redeem(tx, token(key=OTHER, jti="j-2"), NOW).reason is (
            QrRefusal.BAD_SIGNATURE
        )
        assert isinstance(VERIFIER.redeem(tx, token(jti="j-2"), NOW), QrPickup)
    store.close()


@given(st.text(max_size=3000))
def test_scanned_text_never_raises(text: str) -> None:
    assert isinstance(VERIFIER.check(text, NOW), QrRejected)
