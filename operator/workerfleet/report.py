"""Line charts as inline SVG in one self-contained HTML page: the picture of a demo run, and of bench results.

Pure: numbers in, text out. No plotting library, no scripts, no fonts or styles from anywhere else,
so the page opens offline in any browser. The document is well-formed XML (polyglot XHTML), so a test
reads it back with the standard library.

Every panel of a chart shares one x axis (time since the start of the run, or a count), and markers
(the pool's Events) cross every panel at the same x. Each series and marker carries its name in a
`data-` attribute and a `<title>` (shown on hover), and the page repeats the markers in a table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")
WARNING_COLOR = "#d62728"
NORMAL_COLOR = "#555555"

PANEL_HEIGHT = 150
MARGIN_LEFT = 64
MARGIN_RIGHT = 180
MARGIN_TOP = 40
PANEL_GAP = 34
AXIS_BOTTOM = 34
MARKER_LABEL_HEIGHT = 14
TARGET_TICKS = 5
PIXELS_PER_TICK = 110
CHARACTER_WIDTH = 6.5
"""A generous estimate of one character's width at font-size 11, to keep marker labels apart."""
FEW_POINTS = 12


class XFormat(Enum):
    """How x values are labelled: seconds as durations (`90` -> `1m30s`), or plain numbers."""

    SECONDS = "seconds"
    NUMBER = "number"


@dataclass(frozen=True)
class Series:
    """One line: (x, y) points, in any order; points whose y is not finite are gaps."""

    name: str
    points: Sequence[tuple[float, float]]
    step: bool = False
    """Draw as a staircase (a value holds until the next point), as replica counts do."""


@dataclass(frozen=True)
class Panel:
    """Series drawn against one y axis."""

    title: str
    series: Sequence[Series]
    unit: str = ""
    y_format: str = "{:g}"
    """Format of the y tick labels, e.g. `{:.0%}` for rates."""
    y_min_span: float = 1.0
    """The y axis spans at least this much, so a flat line at 0 is not drawn as noise."""


@dataclass(frozen=True)
class Marker:
    """A vertical line across every panel at x, labelled (an Event's reason)."""

    at: float
    label: str
    detail: str = ""
    warning: bool = False


@dataclass(frozen=True)
class Chart:
    """Panels stacked on one x axis, and the markers across them."""

    title: str
    panels: Sequence[Panel]
    markers: Sequence[Marker] = ()
    x_label: str = "time since start"
    x_format: XFormat = XFormat.SECONDS
    width: int = 960


@dataclass(frozen=True)
class Page:
    """An HTML page of charts, with a few lines of text above them."""

    title: str
    charts: Sequence[Chart]
    notes: Sequence[str] = field(default_factory=tuple)


def nice_ticks(low: float, high: float, target: int = TARGET_TICKS) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2 or 5 times a power of ten."""
    if not (math.isfinite(low) and math.isfinite(high)) or high < low:
        raise ValueError(f"no ticks for the range [{low}, {high}]")
    if high == low:
        return [low]
    raw = (high - low) / max(target, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def time_ticks(low: float, high: float, target: int = TARGET_TICKS) -> list[float]:
    """Ticks for seconds: on whole seconds, minutes or hours, whichever gives about `target` of them."""
    span = high - low
    if span <= 0:
        return [low]
    steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
    step = next((s for s in steps if span / s <= target), steps[-1] * math.ceil(span / steps[-1] / target))
    first = math.floor(low / step) * step
    count = math.ceil((high - first) / step)
    return [float(first + n * step) for n in range(count + 1)]


def format_seconds(value: float) -> str:
    """`0s`, `45s`, `2m`, `1m30s`, `1h5m`; negative values with a minus sign."""
    sign = "-" if value < 0 else ""
    seconds = round(abs(value))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m" if minutes else f"{sign}{hours}h"
    if minutes:
        return f"{sign}{minutes}m{secs}s" if secs else f"{sign}{minutes}m"
    return f"{sign}{secs}s"


def _format_x(value: float, x_format: XFormat) -> str:
    return format_seconds(value) if x_format is XFormat.SECONDS else f"{value:g}"


def _finite(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]


def x_range(chart: Chart) -> tuple[float, float]:
    """The x span of every point and marker of the chart; (0, 1) when there are none."""
    xs = [x for panel in chart.panels for series in panel.series for x, _ in _finite(series.points)]
    xs += [marker.at for marker in chart.markers if math.isfinite(marker.at)]
    if not xs:
        return 0.0, 1.0
    low, high = min(xs), max(xs)
    return (low, high) if high > low else (low, low + 1.0)


def y_range(panel: Panel) -> tuple[float, float]:
    """From 0 (or the lowest value, when below 0) to the highest value, at least `y_min_span` high."""
    ys = [y for series in panel.series for _, y in _finite(series.points)]
    low = min([0.0, *ys])
    high = max([low + panel.y_min_span, *ys])
    return low, high


def _number(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _path(points: list[tuple[float, float]], step: bool) -> str:
    """SVG path data through the points, broken where the series has gaps."""
    commands = []
    previous_y: float | None = None
    for index, (x, y) in enumerate(points):
        if index == 0:
            commands.append(f"M{_number(x)},{_number(y)}")
        elif step and previous_y is not None:
            commands.append(f"H{_number(x)}V{_number(y)}")
        else:
            commands.append(f"L{_number(x)},{_number(y)}")
        previous_y = y
    return "".join(commands)


def _segments(points: Sequence[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """Runs of finite points in x order; a non-finite y ends a run."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in sorted(points, key=lambda point: point[0]):
        if not math.isfinite(x):
            continue
        if math.isfinite(y):
            runs[-1].append((x, y))
        elif runs[-1]:
            runs.append([])
    return [run for run in runs if run]


def label_rows(positions: Sequence[tuple[float, str]]) -> list[int]:
    """The row of each label (x in pixels, text), in the given order: the first row where it does
    not overlap the label before it, so labels of Events close in time stay readable."""
    row_ends: list[float] = []
    rows = []
    for x, text in positions:
        end = x + 2 + len(text) * CHARACTER_WIDTH + 4
        row = next((index for index, row_end in enumerate(row_ends) if row_end <= x), len(row_ends))
        if row == len(row_ends):
            row_ends.append(end)
        else:
            row_ends[row] = end
        rows.append(row)
    return rows


def render_svg(chart: Chart) -> str:
    """The chart as one `<svg>` element."""
    x_low, x_high = x_range(chart)
    plot_width = chart.width - MARGIN_LEFT - MARGIN_RIGHT

    def sx(x: float) -> float:
        return MARGIN_LEFT + (x - x_low) / (x_high - x_low) * plot_width

    markers = sorted(chart.markers, key=lambda m: m.at)
    rows = label_rows([(sx(marker.at), marker.label) for marker in markers])
    top = MARGIN_TOP + ((max(rows) + 1) * MARKER_LABEL_HEIGHT + 4 if rows else 0)
    height = top + len(chart.panels) * (PANEL_HEIGHT + PANEL_GAP) - PANEL_GAP + AXIS_BOTTOM + 6
    target = max(2, plot_width // PIXELS_PER_TICK)
    ticks = (time_ticks if chart.x_format is XFormat.SECONDS else nice_ticks)(x_low, x_high, target)
    ticks = [tick for tick in ticks if x_low - 1e-9 <= tick <= x_high + 1e-9]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{chart.width}" height="{height}"'
        f' viewBox="0 0 {chart.width} {height}" font-family="sans-serif" font-size="11"'
        f' role="img" aria-label="{escape(chart.title)}">',
        f"<title>{escape(chart.title)}</title>",
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{MARGIN_LEFT}" y="14" font-size="13" font-weight="bold">{escape(chart.title)}</text>',
    ]
    panel_top = top
    for panel in chart.panels:
        parts.append(_panel(panel, panel_top, sx=sx, x_ticks=ticks, chart=chart, plot_width=plot_width))
        panel_top += PANEL_HEIGHT + PANEL_GAP
    bottom = panel_top - PANEL_GAP
    parts.append(
        f'<text x="{MARGIN_LEFT + plot_width / 2:.1f}" y="{bottom + 30}" text-anchor="middle"'
        f' fill="#333">{escape(chart.x_label)}</text>'
    )
    for marker, row in zip(markers, rows, strict=True):
        x = sx(marker.at)
        color = WARNING_COLOR if marker.warning else NORMAL_COLOR
        label_y = MARGIN_TOP - 8 + row * MARKER_LABEL_HEIGHT
        tooltip = f"{_format_x(marker.at, chart.x_format)} {marker.label}: {marker.detail}".rstrip(": ")
        parts.append(
            f'<g class="marker" data-label="{escape(marker.label)}" data-at="{_number(marker.at)}">'
            f"<title>{escape(tooltip)}</title>"
            f'<line x1="{x:.1f}" y1="{label_y + 3}" x2="{x:.1f}" y2="{bottom}" stroke="{color}"'
            f' stroke-dasharray="4 3"/>'
            f'<text x="{x + 2:.1f}" y="{label_y}" fill="{color}">{escape(marker.label)}</text></g>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _panel(
    panel: Panel,
    top: int,
    *,
    sx: Callable[[float], float],
    x_ticks: list[float],
    chart: Chart,
    plot_width: int,
) -> str:
    y_low, y_high = y_range(panel)
    y_ticks = nice_ticks(y_low, y_high, 4)
    y_low, y_high = min(y_low, y_ticks[0]), max(y_high, y_ticks[-1])
    bottom = top + PANEL_HEIGHT

    def sy(y: float) -> float:
        return bottom - (y - y_low) / (y_high - y_low) * PANEL_HEIGHT

    unit = f" ({panel.unit})" if panel.unit else ""
    parts = [
        f'<g class="panel" data-title="{escape(panel.title)}">',
        f'<text x="{MARGIN_LEFT}" y="{top - 6}" font-weight="bold">{escape(panel.title + unit)}</text>',
        f'<rect x="{MARGIN_LEFT}" y="{top}" width="{plot_width}" height="{PANEL_HEIGHT}" fill="none"'
        f' stroke="#bbb"/>',
    ]
    for tick in y_ticks:
        y = sy(tick)
        parts.append(
            f'<line x1="{MARGIN_LEFT}" y1="{y:.1f}" x2="{MARGIN_LEFT + plot_width}" y2="{y:.1f}"'
            f' stroke="#eee"/><text x="{MARGIN_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end"'
            f' fill="#333">{escape(panel.y_format.format(tick))}</text>'
        )
    for tick in x_ticks:
        x = sx(tick)
        parts.append(
            f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#333"/>'
            f'<text x="{x:.1f}" y="{bottom + 15}" text-anchor="middle" fill="#333">'
            f"{escape(_format_x(tick, chart.x_format))}</text>"
        )
    for index, series in enumerate(panel.series):
        color = PALETTE[index % len(PALETTE)]
        points = sum(len(run) for run in _segments(series.points))
        runs = _segments(series.points)
        paths = "".join(
            f'<path d="{_path([(sx(x), sy(y)) for x, y in run], series.step)}" fill="none"'
            f' stroke="{color}" stroke-width="1.8"/>'
            for run in runs
        )
        if points <= FEW_POINTS:  # few points: show where they are
            paths += "".join(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>'
                for run in runs
                for x, y in run
            )
        legend_y = top + 12 + index * 16
        legend_x = MARGIN_LEFT + plot_width + 10
        parts.append(
            f'<g class="series" data-name="{escape(series.name)}" data-points="{points}">'
            f"<title>{escape(series.name)}</title>{paths}"
            f'<line x1="{legend_x}" y1="{legend_y - 4}" x2="{legend_x + 16}" y2="{legend_y - 4}"'
            f' stroke="{color}" stroke-width="2"/>'
            f'<text x="{legend_x + 20}" y="{legend_y}" fill="#333">{escape(series.name)}</text></g>'
        )
    parts.append("</g>")
    return "\n".join(parts)


def render_html(page: Page) -> str:
    """A self-contained page: the charts inline, each followed by a table of its markers."""
    body = [f"<h1>{escape(page.title)}</h1>"]
    body += [f"<p>{escape(note)}</p>" for note in page.notes]
    for chart in page.charts:
        body.append(render_svg(chart))
        if chart.markers:
            rows = "".join(
                f"<tr><td>{escape(_format_x(m.at, chart.x_format))}</td><td>{escape(m.label)}</td>"
                f"<td>{escape(m.detail)}</td></tr>"
                for m in sorted(chart.markers, key=lambda m: m.at)
            )
            body.append(
                f'<table class="markers"><tr><th>{escape(chart.x_label)}</th><th>event</th>'
                f"<th>message</th></tr>{rows}</table>"
            )
    return (
        "<!DOCTYPE html>\n"
        '<html xmlns="http://www.w3.org/1999/xhtml" lang="en">\n<head><meta charset="utf-8"/>'
        f"<title>{escape(page.title)}</title>\n"
        "<style>body{font-family:sans-serif;margin:1.5em;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0 2em}td,th{border:1px solid #ccc;"
        "padding:2px 8px;text-align:left;font-size:12px}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
