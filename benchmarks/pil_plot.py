"""Log-log line plots drawn with Pillow (already a pds_jax dependency; no matplotlib).

`loglog_panel` draws one panel (axes, decade grid, lines with markers, legend) and
`grid_of_panels` tiles panels into one image. Enough for benchmark curves such as
error vs NFE; not a plotting library.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFont

# Tableau-10 plus four darker colours; beyond 14 series the markers change.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#000000", "#393b79", "#637939", "#843c39"]
MARKERS = ["o", "s", "^", "D"]

Series = Dict[str, List[Tuple[float, float]]]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _decades(lo: float, hi: float) -> Tuple[int, int]:
    return math.floor(math.log10(lo)), math.ceil(math.log10(hi))


def _marker(draw: ImageDraw.ImageDraw, kind: str, x: float, y: float, r: int, color: str) -> None:
    if kind == "o":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
    elif kind == "s":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=color)
    elif kind == "^":
        draw.polygon([(x, y - r - 1), (x - r - 1, y + r), (x + r + 1, y + r)], fill=color)
    else:
        draw.polygon([(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)], fill=color)


def loglog_panel(series: Series, title: str, xlabel: str, ylabel: str, size: Tuple[int, int] = (640, 480),
                 legend: bool = True, reference: Optional[float] = None) -> Image.Image:
    """One log-log panel; `series` maps a label to [(x, y), ...] (points with y <= 0 are dropped).

    `reference` draws a dashed horizontal line at that y (e.g. a noise floor).
    """
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(12)
    points = {k: [(x, y) for x, y in v if x > 0 and y > 0 and math.isfinite(y)] for k, v in series.items()}
    xs = [x for v in points.values() for x, _ in v]
    ys = [y for v in points.values() for _, y in v] + ([reference] if reference and reference > 0 else [])
    draw.text((width / 2, 8), title, fill="black", font=font, anchor="mt")
    if not xs:
        draw.text((width / 2, height / 2), "no data", fill="black", font=font, anchor="mm")
        return image
    x0, x1 = _decades(min(xs), max(xs))
    y0, y1 = _decades(min(ys), max(ys))
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    left, right, top, bottom = 70, width - (170 if legend else 20), 34, height - 50

    def to_px(x: float, y: float) -> Tuple[float, float]:
        u = (math.log10(x) - x0) / (x1 - x0)
        v = (math.log10(y) - y0) / (y1 - y0)
        return left + u * (right - left), bottom - v * (bottom - top)

    for d in range(x0, x1 + 1):
        for m in range(1, 10):
            px, _ = to_px(m * 10.0**d, 10.0**y0)
            if px > right + 0.5:
                break
            draw.line([(px, top), (px, bottom)], fill="#e6e6e6" if m > 1 else "#bbbbbb")
        px, _ = to_px(10.0**d, 10.0**y0)
        draw.text((px, bottom + 6), f"1e{d}" if not 0 <= d <= 3 else str(10**d), fill="black", font=small,
                  anchor="mt")
    for d in range(y0, y1 + 1):
        _, py = to_px(10.0**x0, 10.0**d)
        draw.line([(left, py), (right, py)], fill="#bbbbbb")
        draw.text((left - 6, py), f"1e{d}", fill="black", font=small, anchor="rm")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(((left + right) / 2, height - 18), xlabel, fill="black", font=font, anchor="mm")
    label_img = Image.new("RGB", (bottom - top, 20), "white")
    ImageDraw.Draw(label_img).text(((bottom - top) / 2, 10), ylabel, fill="black", font=font, anchor="mm")
    image.paste(label_img.rotate(90, expand=True), (6, top))

    if reference and reference > 0:
        _, py = to_px(10.0**x0, reference)
        for px in range(left, right, 12):
            draw.line([(px, py), (min(px + 6, right), py)], fill="black", width=1)
        draw.text((left + 6, py - 3), "floor", fill="black", font=small, anchor="lb")

    for k, (name, pts) in enumerate(points.items()):
        color, marker = PALETTE[k % len(PALETTE)], MARKERS[(k // len(PALETTE)) % len(MARKERS)]
        pts = sorted(pts)
        pix = [to_px(x, y) for x, y in pts]
        if len(pix) > 1:
            draw.line(pix, fill=color, width=2)
        for px, py in pix:
            _marker(draw, marker, px, py, 3, color)
        if legend:
            ly = top + 4 + 17 * k
            draw.line([(right + 10, ly + 7), (right + 34, ly + 7)], fill=color, width=2)
            _marker(draw, marker, right + 22, ly + 7, 3, color)
            draw.text((right + 40, ly), name, fill="black", font=small)
    return image


def grid_of_panels(panels: Sequence[Image.Image], columns: int, title: Optional[str] = None) -> Image.Image:
    """Tile equally sized panels row-major into one image with an optional title line."""
    w, h = panels[0].size
    rows = math.ceil(len(panels) / columns)
    header = 30 if title else 0
    out = Image.new("RGB", (columns * w, rows * h + header), "white")
    if title:
        ImageDraw.Draw(out).text((columns * w / 2, 8), title, fill="black", font=_font(17), anchor="mt")
    for i, panel in enumerate(panels):
        out.paste(panel, ((i % columns) * w, header + (i // columns) * h))
    return out


def _nice_ticks(lo: float, hi: float, count: int = 5) -> List[float]:
    """About `count` round tick values covering [lo, hi] (steps 1, 2 or 5 × 10^k)."""
    span = max(hi - lo, 1e-12)
    raw = span / count
    step = min((m * 10.0 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    first = math.floor(lo / step) * step
    return [first + i * step for i in range(int(math.ceil((hi - first) / step)) + 1)]


ErrorSeries = Dict[str, List[Tuple[float, float, float, float]]]


def errorbar_panel(series: ErrorSeries, title: str, xlabel: str, ylabel: str, size: Tuple[int, int] = (560, 420),
                   xlog: bool = True, band: Optional[Tuple[float, float, str]] = None) -> Image.Image:
    """One panel with a linear y axis; `series` maps a label to [(x, y, y_lo, y_hi), ...] drawn as a
    line with markers and vertical interval bars (x on a log axis unless `xlog=False`).
    `band` = (lo, hi, label) shades a horizontal band (e.g. the metric of real images)."""
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(11)
    pts = {k: [p for p in v if all(map(math.isfinite, p))] for k, v in series.items()}
    xs = [p[0] for v in pts.values() for p in v]
    ys = [y for v in pts.values() for p in v for y in p[1:]] + (list(band[:2]) if band else [])
    draw.text((width / 2, 8), title, fill="black", font=font, anchor="mt")
    if not xs:
        return image
    fx = (lambda x: math.log10(x)) if xlog else (lambda x: x)
    x0, x1 = fx(min(xs)), fx(max(xs))
    pad = 0.06 * max(x1 - x0, 1e-9)
    x0, x1 = x0 - pad, x1 + pad
    yticks = _nice_ticks(min(ys), max(ys))
    y0, y1 = yticks[0], yticks[-1]
    left, right, top, bottom = 64, width - 150, 30, height - 46

    def to_px(x: float, y: float) -> Tuple[float, float]:
        return (left + (fx(x) - x0) / (x1 - x0) * (right - left),
                bottom - (y - y0) / max(y1 - y0, 1e-12) * (bottom - top))

    if band:
        _, ya = to_px(min(xs), band[0])
        _, yb = to_px(min(xs), band[1])
        draw.rectangle([left, min(ya, yb), right, max(ya, yb) + 1], fill="#cfe8cf")
    for y in yticks:
        _, py = to_px(min(xs), y)
        draw.line([(left, py), (right, py)], fill="#dddddd")
        draw.text((left - 5, py), f"{y:g}", fill="black", font=small, anchor="rm")
    for x in sorted(set(xs)):
        px, _ = to_px(x, y0)
        draw.text((px, bottom + 5), f"{x:g}" if x == round(x) else f"{x:.3g}", fill="black", font=small, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(((left + right) / 2, height - 16), xlabel, fill="black", font=font, anchor="mm")
    label_img = Image.new("RGB", (bottom - top, 18), "white")
    ImageDraw.Draw(label_img).text(((bottom - top) / 2, 9), ylabel, fill="black", font=small, anchor="mm")
    image.paste(label_img.rotate(90, expand=True), (4, top))
    legend = ([(band[2], "#cfe8cf", None)] if band else [])
    for k, (name, points) in enumerate(pts.items()):
        color, marker = PALETTE[k % len(PALETTE)], MARKERS[(k // len(PALETTE)) % len(MARKERS)]
        points = sorted(points)
        shift = (k - (len(pts) - 1) / 2) * 4  # px: bars of one x stay apart
        pix = [to_px(p[0], p[1]) for p in points]
        if len(pix) > 1:
            draw.line([(u + shift, v) for u, v in pix], fill=color, width=2)
        for p, (u, v) in zip(points, pix):
            _, lo = to_px(p[0], p[2])
            _, hi = to_px(p[0], p[3])
            draw.line([(u + shift, lo), (u + shift, hi)], fill=color, width=1)
            _marker(draw, marker, u + shift, v, 3, color)
        legend.append((name, color, marker))
    _legend(draw, legend, right + 8, top + 4, small)
    return image


def _legend(draw: ImageDraw.ImageDraw, entries, x: float, y: float, font) -> None:
    """Entries (label, colour, marker or None for a filled box), one per 16-px line from (x, y)."""
    for k, (name, color, marker) in enumerate(entries):
        ly = y + 16 * k
        if marker is None:
            draw.rectangle([x, ly + 2, x + 24, ly + 12], fill=color)
        else:
            draw.line([(x, ly + 7), (x + 24, ly + 7)], fill=color, width=2)
            _marker(draw, marker, x + 12, ly + 7, 3, color)
        draw.text((x + 30, ly), name, fill="black", font=font)
