"""Colours for plots: the Okabe-Ito palette (safe for the common colour-vision deficiencies), and a
fixed colour per name, so a GPU type or a variant keeps its colour from one run to the next.

A catalog GPU always gets the same colour; any other name (a variant, a policy) gets one by a
stable hash of its text, unless `colours_for` is given the whole list, which then keeps the
colours distinct in the order given.
"""

from __future__ import annotations

import zlib

OKABE_ITO = {
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "bluish green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish purple": "#CC79A7",
    "black": "#000000",
}
CYCLE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
BETTER = "#0072B2"  # blue: significantly better
WORSE = "#D55E00"  # vermillion: significantly worse
NEUTRAL = "#BBBBBB"
SLO = "#D55E00"

GPU_COLOURS = {
    "a10g": "#E69F00", "l4": "#56B4E9", "l40s": "#009E73", "a100-40gb": "#F0E442", "a100-80gb": "#0072B2",
    "h100-sxm": "#D55E00", "h100-pcie": "#CC79A7", "h200": "#000000", "b200": "#999999", "mi300x": "#882255",
}


def colour_of(name: str) -> str:
    """A fixed colour for a name: catalog GPUs have their own, anything else by a stable hash."""
    if name in GPU_COLOURS:
        return GPU_COLOURS[name]
    return CYCLE[zlib.crc32(name.encode()) % len(CYCLE)]


def colours_for(names: list[str]) -> dict[str, str]:
    """Distinct colours for the names in the order given (cycling past eight)."""
    return {name: CYCLE[i % len(CYCLE)] for i, name in enumerate(names)}
