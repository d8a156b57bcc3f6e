"""The project's plots of ρ (per-segment reproduction error): one figure tail, one log axis that shows exact
zeros and infinities as such, one way to draw δ. Used by `verifier.report`, `verifier.calibrate` and the
explorer, so the three look and read the same.

Why a custom log axis: ρ = 0 (a bitwise replay) and ρ = ∞ (a segment whose recorded update is zero but
whose replay moves the weights) have no place on a log scale. They are drawn in a band of their own, below
(resp. above) the decades of the data, with a tick labelled "0" (resp. "inf") and a dotted separator, so a
reader never mistakes them for a tiny or a huge finite value.

matplotlib's object API (`Figure`, no pyplot) keeps no global state: safe from the explorer's threads.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PASS_COLOR, FAIL_COLOR, DELTA_COLOR = "tab:green", "tab:red", "tab:orange"


@contextmanager
def figure(path: str | Path | io.BytesIO, size: tuple[float, float] = (8.0, 4.0)) -> Iterator[tuple[Any, Any]]:
    """A figure and its axes; on leaving the block the PNG is written to `path` (legends outside the axes are
    kept in: tight bounding box). Nothing is written if the block raises."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    ax = fig.subplots()
    yield fig, ax
    fig.savefig(path, format="png", bbox_inches="tight")


def png_bytes(draw: Any, *args: Any, **kwargs: Any) -> bytes:
    """`draw(*args, path=buffer, **kwargs)` into memory: the explorer serves plots without temporary files."""
    buf = io.BytesIO()
    draw(*args, path=buf, **kwargs)
    return buf.getvalue()


@dataclass(frozen=True)
class LogBands:
    """A log axis covering the finite positive values and δ, with a band below for exact zeros and a band
    above for infinities (each only when such values occur)."""

    lo_decade: int
    hi_decade: int
    has_zero: bool
    has_inf: bool
    top_label: str = "inf"  # the top band's tick ("n/a" when it holds only segments that were not replayed)

    @classmethod
    def fit(cls, values: Iterable[float | None], extra: Iterable[float] = ()) -> LogBands:
        vals = [v for v in values if v is not None]
        finite = [v for v in [*vals, *extra] if math.isfinite(v) and v > 0]
        lo = math.floor(math.log10(min(finite))) if finite else -12
        hi = math.ceil(math.log10(max(finite))) if finite else 0
        hi = max(hi, lo + 1)
        return cls(lo, hi, any(v == 0 for v in vals), any(math.isinf(v) for v in vals))

    @property
    def zero_at(self) -> float:
        return float(10.0 ** (self.lo_decade - 1))

    @property
    def inf_at(self) -> float:
        return float(10.0 ** (self.hi_decade + 1))

    def place(self, v: float) -> float:
        """Where a value is drawn: 0 and ∞ in their bands, finite values where they are."""
        if v == 0:
            return self.zero_at
        if math.isinf(v):
            return self.inf_at
        return v

    def apply(self, ax: Any, axis: str = "y") -> None:
        """Log scale, limits, decade ticks (thinned to at most 8) plus "0" / "inf" ticks, band separators."""
        from matplotlib.ticker import FixedLocator, NullLocator

        decades = list(range(self.lo_decade, self.hi_decade + 1))
        stride = max(1, math.ceil(len(decades) / 8))
        ticks = [10.0 ** d for d in decades[::stride]]
        labels = [f"1e{d}" if d not in (0, 1) else str(10 ** d) for d in decades[::stride]]
        lo, hi = 10.0 ** (self.lo_decade - 0.2), 10.0 ** (self.hi_decade + 0.2)
        line = ax.axhline if axis == "y" else ax.axvline
        if self.has_zero:
            ticks.insert(0, self.zero_at)
            labels.insert(0, "0")
            lo = self.zero_at / 10 ** 0.4
            line(10.0 ** (self.lo_decade - 0.5), color="0.6", linestyle=":", linewidth=1)
        if self.has_inf:
            ticks.append(self.inf_at)
            labels.append(self.top_label)
            hi = self.inf_at * 10 ** 0.4
            line(10.0 ** (self.hi_decade + 0.5), color="0.6", linestyle=":", linewidth=1)
        target = ax.yaxis if axis == "y" else ax.xaxis
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        (ax.set_ylim if axis == "y" else ax.set_xlim)(lo, hi)
        target.set_major_locator(FixedLocator(ticks))
        target.set_minor_locator(NullLocator())
        (ax.set_yticks if axis == "y" else ax.set_xticks)(ticks, labels)


@dataclass(frozen=True)
class RhoPoint:
    """One segment as the ρ plot needs it (from an `AuditReport` or a report JSON)."""

    index: int
    rho: float | None  # None: not replayed (an error or missing evidence)
    passed: bool


def rho_plot(points: Sequence[RhoPoint], threshold: float, path: str | Path | io.BytesIO, title: str = "") -> None:
    """Per-segment ρ against δ: passing segments green, failing red, exact zeros and infinities in their own
    bands (labelled in the legend), segments not replayed as crosses at the top, δ as a dashed line."""
    bands = LogBands.fit([p.rho for p in points], [threshold] if threshold > 0 else [])
    with figure(path) as (_fig, ax):
        groups: list[tuple[str, list[RhoPoint], dict[str, Any]]] = [
            ("pass", [p for p in points if p.passed and p.rho is not None and p.rho > 0],
             {"c": PASS_COLOR, "marker": "o"}),
            ("pass, ρ = 0 exactly (bitwise replay)", [p for p in points if p.passed and p.rho == 0],
             {"c": PASS_COLOR, "marker": "v"}),
            ("fail", [p for p in points if not p.passed and p.rho is not None and math.isfinite(p.rho)
                      and p.rho > 0], {"c": FAIL_COLOR, "marker": "o"}),
            ("fail, ρ = 0", [p for p in points if not p.passed and p.rho == 0], {"c": FAIL_COLOR, "marker": "v"}),
            ("fail, ρ = inf (recorded update is zero)", [p for p in points if p.rho is not None and math.isinf(p.rho)],
             {"c": FAIL_COLOR, "marker": "^"}),
        ]
        for label, pts, style in groups:
            if pts:
                ax.scatter([p.index for p in pts], [bands.place(float(p.rho or 0)) for p in pts], zorder=3,
                           label=f"{label} ({len(pts)})", clip_on=False, **style)
        errored = [p.index for p in points if p.rho is None]
        if errored:
            ax.scatter(errored, [bands.inf_at] * len(errored), marker="x", c=FAIL_COLOR, zorder=3, clip_on=False,
                       label=f"not replayed: error or missing evidence ({len(errored)})")
            bands = LogBands(bands.lo_decade, bands.hi_decade, bands.has_zero, True,
                             "inf / n/a" if bands.has_inf else "n/a")
        if threshold > 0:
            ax.axhline(threshold, color=DELTA_COLOR, linestyle="--", label=f"threshold δ = {threshold:g}")
        bands.apply(ax, "y")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # segments are whole numbers
        ax.set_xlabel("segment index")
        ax.set_ylabel("ρ = replay error / recorded update")
        if points:
            ax.set_xlim(min(p.index for p in points) - 0.7, max(p.index for p in points) + 0.7)
        ax.set_title(title[:110], fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


__all__ = ["LogBands", "RhoPoint", "figure", "png_bytes", "rho_plot"]
