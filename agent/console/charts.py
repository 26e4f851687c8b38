"""Charts as inline SVG strings, drawn on the server: no JS chart library, nothing to fetch."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")


def hbar(items: Sequence[tuple[str, float]], width: int = 420, unit: str = "", title: str = "") -> str:
    """Horizontal bars, one per (label, value)."""
    if not items:
        return '<p class="muted">no data</p>'
    row, label_w = 22, 130
    top = max(v for _, v in items) or 1
    h = row * len(items) + 6
    parts = [f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {h}" width="{width}" height="{h}">']
    for i, (label, value) in enumerate(items):
        y = i * row + 3
        w = (width - label_w - 60) * value / top
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" font-size="12">{escape(str(label))}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" fill="{PALETTE[0]}"/>')
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 14}" font-size="12">{_num(value)}{escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def lines(
    series: dict[str, list[tuple[float, float]]], width: int = 640, height: int = 220, unit: str = "", title: str = ""
) -> str:
    """Line chart over time; series name -> [(unix time, value)]."""
    points = [p for s in series.values() for p in s]
    if not points:
        return '<p class="muted">no data</p>'
    left, right, top_pad, bottom = 52, 150, 10, 28
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y1 = max(p[1] for p in points) or 1
    span = (x1 - x0) or 1

    def sx(x: float) -> float:
        return left + (width - left - right) * ((x - x0) / span if x1 > x0 else 0.5)

    def sy(y: float) -> float:
        return top_pad + (height - top_pad - bottom) * (1 - y / y1)

    out = [f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" width="{width}" height="{height}">']
    for frac in (0, 0.5, 1):
        y = sy(y1 * frac)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_num(y1 * frac)}{escape(unit)}</text>')
    for x in sorted({x0, x1}):
        label = dt.datetime.fromtimestamp(x).strftime("%m-%d %H:%M")
        out.append(f'<text x="{sx(x):.1f}" y="{height - 8}" text-anchor="middle" font-size="11">{label}</text>')
    for i, (name, pts) in enumerate(sorted(series.items())):
        color = PALETTE[i % len(PALETTE)]
        pts = sorted(pts)
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        for x, y in pts:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>')
        ly = top_pad + 14 * i + 8
        out.append(f'<rect x="{width - right + 10}" y="{ly - 8}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{width - right + 24}" y="{ly + 1}" font-size="11">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


_STAGE_ORDER = ("vad", "asr", "nlu", "dst", "policy", "tts", "connector")


def stage_color(stage: str) -> str:
    """The same colour for a stage on every turn and every page."""
    i = _STAGE_ORDER.index(stage) if stage in _STAGE_ORDER else len(_STAGE_ORDER) + sum(map(ord, stage))
    return PALETTE[i % len(PALETTE)]


def stage_bar(latency_ms: dict[str, float], scale_ms: float, width: int = 220) -> str:
    """One turn's per-stage latency as a stacked bar (same scale for every turn of a call)."""
    if not latency_ms:
        return ""
    scale_ms = scale_ms or 1
    x = 0.0
    out = [f'<svg class="latbar" viewBox="0 0 {width} 14" width="{width}" height="14">']
    for stage, ms in latency_ms.items():
        w = max(1.0, width * ms / scale_ms)
        out.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="14" fill="{stage_color(stage)}">'
            f"<title>{escape(stage)} {ms:.1f} ms</title></rect>"
        )
        x += w
    out.append("</svg>")
    return "".join(out)


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.2f}"
