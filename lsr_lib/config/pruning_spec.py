"""The grammar of index-side pruning settings (``index.pruning``, ``index.scale_pruning``); applied by
:mod:`lsr_lib.index.pruning`.

A spec joins parts with ``+``: ``d<k>`` (document top-k terms), ``q<k>`` (query top-k terms),
``df<share>`` (posting lists capped at share x documents), ``u<bits>`` (weights quantised to
``bits``); ``none`` is the unpruned setting. Example: ``d32+q16+df0.1+u8``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

_PART = re.compile(r"^(?:(d|q)(\d+)|df(0?\.\d+|1(?:\.0*)?)|u(\d+))$")
ID_BYTES = 4  # a posting's document id (int32)


@dataclass(frozen=True)
class Pruning:
    """One parsed spec; ``None`` fields are measures not applied."""

    doc_k: Optional[int] = None
    query_k: Optional[int] = None
    df_share: Optional[float] = None
    bits: Optional[int] = None

    @property
    def bytes_per_posting(self) -> float:
        """Document id + weight (float32, or ``bits`` when quantised)."""
        return ID_BYTES + (self.bits / 8 if self.bits else 4)


def parse(spec: str) -> Pruning:
    """``"d32+q16+df0.1+u8"`` -> :class:`Pruning`; a clear error names the bad part."""
    if spec == "none":
        return Pruning()
    fields: dict = {}
    for part in spec.split("+"):
        m = _PART.match(part)
        if m is None:
            raise ValueError(
                f"pruning spec {spec!r}: unknown part {part!r}; parts are d<k>, q<k>, df<share in (0, 1]>, u<bits in "
                "1..16>, joined by '+', or 'none'"
            )
        side, k, share, bits = m.groups()
        key, value = (
            (("doc_k" if side == "d" else "query_k"), int(k))
            if side
            else (("df_share", float(share)) if share else ("bits", int(bits)))
        )
        if key in fields:
            raise ValueError(f"pruning spec {spec!r}: {part!r} repeats a measure")
        if (
            (key in ("doc_k", "query_k") and value < 1)
            or (key == "df_share" and not 0 < value <= 1)
            or (key == "bits" and not 1 <= value <= 16)
        ):
            raise ValueError(
                f"pruning spec {spec!r}: {part!r} is out of range (k >= 1, share in (0, 1], bits in 1..16)"
            )
        fields[key] = value
    return Pruning(**fields)
