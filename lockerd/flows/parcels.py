"""What a parcel's barcode may be, and the size after a size: shared by the courier flows."""

from __future__ import annotations

import re

from ..model import Size

# Printable ASCII without spaces: what 1D/2D courier barcodes carry; anything else is a misread.
_BARCODE = re.compile(r"[\x21-\x7e]{1,64}")
_SIZES = [Size.S, Size.M, Size.L, Size.XL]


def next_size(size: Size) -> Size | None:
    rank = _SIZES.index(size)
    return _SIZES[rank + 1] if rank + 1 < len(_SIZES) else None


def valid_barcode(barcode: str) -> str | None:
    if not isinstance(barcode, str):
        return None
    barcode = barcode.strip()
    return barcode if _BARCODE.fullmatch(barcode) else None
