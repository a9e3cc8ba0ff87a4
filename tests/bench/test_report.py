"""The SVG/HTML report renderer: pure, so table tests on numbers and on the document it writes."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from workerfleet.report import (
    Chart,
    Marker,
    Page,
    Panel,
    Series,
    XFormat,
    format_seconds,
    label_rows,
    nice_ticks,
    render_html,
    render_svg,
    time_ticks,
    x_range,
    y_range,
)

SVG = "{http://www.w3.org/2000/svg}"
XHTML = "{http://www.w3.org/1999/xhtml}"


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0, 10, [0, 2, 4, 6, 8, 10]),
        (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0, 7, [0, 2, 4, 6, 8]),
        (0, 0.15, [0, 0.05, 0.1, 0.15]),
        (-3, 3, [-4, -2, 0, 2, 4]),
        (5, 5, [5]),
        (0, 1000, [0, 200, 400, 600, 800, 1000]),
    ],
)
def test_nice_ticks_cover_the_range_in_round_steps(low: float, high: float, expected: list[float]) -> None:
    assert nice_ticks(low, high) == pytest.approx(expected)


@pytest.mark.parametrize(("low", "high"), [(1, 0), (0, math.inf), (math.nan, 1)])
def test_nice_ticks_refuse_a_range_that_is_not_one(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="no ticks"):
        nice_ticks(low, high)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0, 10, [0, 2, 4, 6, 8, 10]),
        (0, 170, [0, 60, 120, 180]),
        (0, 600, [0, 120, 240, 360, 480, 600]),
        (12, 50, [10, 20, 30, 40, 50]),
        (3, 3, [3]),
    ],
)
def test_time_ticks_fall_on_whole_seconds_and_minutes(low: float, high: float, expected: list[float]) -> None:
    assert time_ticks(low, high) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (59.6, "1m"),
        (90, "1m30s"),
        (120, "2m"),
        (3900, "1h5m"),
        (7200, "2h"),
        (-30, "-30s"),
    ],
)
def test_seconds_read_as_durations(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("panels", "markers", "expected"),
    [
        ([], [], (0.0, 1.0)),
        ([Panel("p", [Series("a", [(3, 1)])])], [], (3.0, 4.0)),
        ([Panel("p", [Series("a", [(3, 1), (10, 2)])])], [Marker(20, "late")], (3.0, 20.0)),
        ([Panel("p", [Series("a", [(5, 1)]), Series("b", [(1, math.nan), (2, 0)])])], [], (2.0, 5.0)),
    ],
)
def test_the_x_axis_spans_every_point_and_marker(
    panels: list[Panel], markers: list[Marker], expected: tuple[float, float]
) -> None:
    assert x_range(Chart("c", panels, markers)) == expected


@pytest.mark.parametrize(
    ("series", "min_span", "expected"),
    [
        ([], 1.0, (0.0, 1.0)),
        ([Series("zeros", [(0, 0), (1, 0)])], 1.0, (0.0, 1.0)),
        ([Series("rate", [(0, 0.02)])], 0.1, (0.0, 0.1)),
        ([Series("depth", [(0, 150), (1, 3)])], 1.0, (0.0, 150.0)),
        ([Series("delta", [(0, -2), (1, 5)])], 1.0, (-2.0, 5.0)),
    ],
)
def test_the_y_axis_starts_at_zero_and_spans_at_least_the_minimum(
    series: list[Series], min_span: float, expected: tuple[float, float]
) -> None:
    assert y_range(Panel("p", series, y_min_span=min_span)) == expected


def _chart() -> Chart:
    return Chart(
        "a run",
        [
            Panel("Queue", [Series("queue depth", [(0, 0), (5, 150), (30, 0)])], unit="jobs"),
            Panel(
                "Replicas",
                [Series("desired", [(0, 0), (6, 1), (12, 4)], step=True), Series("ready", [])],
            ),
            Panel(
                "Error rate",
                [Series("stable", [(40, 0.02), (50, math.nan), (60, 0.03)]), Series("canary", [(45, 0.5)])],
                y_format="{:.0%}",
            ),
        ],
        [Marker(5, "Activated", "woke up"), Marker(55, "RolledBack", 'rate <50%> & "more"', warning=True)],
    )


def test_the_svg_holds_each_panel_series_and_marker_by_name() -> None:
    svg = ET.fromstring(render_svg(_chart()))
    assert svg.tag == f"{SVG}svg"
    assert [g.get("data-title") for g in svg.iter(f"{SVG}g") if g.get("class") == "panel"] == [
        "Queue",
        "Replicas",
        "Error rate",
    ]
    series = {g.get("data-name"): g for g in svg.iter(f"{SVG}g") if g.get("class") == "series"}
    assert list(series) == ["queue depth", "desired", "ready", "stable", "canary"]
    assert {name: g.get("data-points") for name, g in series.items()} == {
        "queue depth": "3",
        "desired": "3",
        "ready": "0",
        "stable": "2",
        "canary": "1",
    }
    # A gap (NaN) splits the line in two; an empty series draws no line, only its legend
    assert len(series["stable"].findall(f"{SVG}path")) == 2
    assert series["ready"].findall(f"{SVG}path") == []
    # The staircase holds the value until the next point
    [desired] = series["desired"].findall(f"{SVG}path")
    assert "H" in (desired.get("d") or "")
    markers = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "marker"]
    assert [(g.get("data-label"), g.get("data-at")) for g in markers] == [
        ("Activated", "5"),
        ("RolledBack", "55"),
    ]
    assert markers[1].findtext(f"{SVG}title") == '55s RolledBack: rate <50%> & "more"'


def test_markers_and_points_share_one_x_scale() -> None:
    svg = ET.fromstring(render_svg(_chart()))
    queue = next(g for g in svg.iter(f"{SVG}g") if g.get("data-name") == "queue depth")
    path = queue.find(f"{SVG}path")
    assert path is not None
    # The depth's second point and the Activated marker are both at x=5
    second_point_x = (path.get("d") or "").split("L")[1].split(",")[0]
    activated = next(g for g in svg.iter(f"{SVG}g") if g.get("data-label") == "Activated")
    line = activated.find(f"{SVG}line")
    assert line is not None
    assert float(line.get("x1") or "nan") == pytest.approx(float(second_point_x), abs=0.1)


def test_rates_are_labelled_as_percentages_and_counts_as_numbers() -> None:
    svg = ET.fromstring(render_svg(Chart("c", [_chart().panels[2]], x_format=XFormat.NUMBER)))
    labels = [text.text for text in svg.iter(f"{SVG}text")]
    assert "50%" in labels
    assert "40" in labels
    assert "40s" not in labels


def test_the_page_is_self_contained_xhtml_with_a_table_of_the_markers() -> None:
    page = render_html(Page("workerfleet demo", [_chart()], notes=["started 08:00:00 UTC"]))
    root = ET.fromstring(page.removeprefix("<!DOCTYPE html>\n"))
    assert root.findtext(f"{XHTML}head/{XHTML}title") == "workerfleet demo"
    assert len(list(root.iter(f"{SVG}svg"))) == 1
    rows = [[td.text for td in tr.findall(f"{XHTML}td")] for tr in root.iter(f"{XHTML}tr")][1:]
    assert rows == [["5s", "Activated", "woke up"], ["55s", "RolledBack", 'rate <50%> & "more"']]
    # Nothing to fetch and nothing to run: no scripts, no links, no URLs but the XML namespaces
    assert not [e for e in root.iter() if e.tag in {f"{XHTML}script", f"{XHTML}link", f"{XHTML}img"}]
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "").replace(
        "http://www.w3.org/1999/xhtml", ""
    )


def test_an_empty_chart_still_renders() -> None:
    svg = ET.fromstring(render_svg(Chart("nothing yet", [Panel("empty", [])])))
    assert svg.findtext(f"{SVG}title") == "nothing yet"


@pytest.mark.parametrize(
    ("positions", "rows"),
    [
        ([], []),
        # far apart: one row
        ([(0, "Activated"), (200, "ScaledUp")], [0, 0]),
        # close together: each on the next free row, and back to the first once it is free
        (
            [(0, "RolloutStarted"), (10, "AnalysisFailed"), (12, "RolledBack"), (300, "Deactivated")],
            [0, 1, 2, 0],
        ),
        ([(0, "ScaledDown"), (20, "ScaledDown"), (80, "ScaledDown")], [0, 1, 0]),
    ],
)
def test_marker_labels_close_in_time_go_on_separate_rows(
    positions: list[tuple[float, str]], rows: list[int]
) -> None:
    assert label_rows(positions) == rows


def test_markers_rows_make_room_above_the_panels() -> None:
    close = [Marker(10, "RolloutStarted"), Marker(10.5, "AnalysisFailed"), Marker(11, "RolledBack")]
    crowded = ET.fromstring(render_svg(Chart("c", [Panel("p", [Series("s", [(0, 1), (100, 2)])])], close)))
    apart = ET.fromstring(
        render_svg(Chart("c", [Panel("p", [Series("s", [(0, 1), (100, 2)])])], [close[0], Marker(90, "x")]))
    )
    label_ys = {
        float(t.get("y") or 0)
        for g in crowded.iter(f"{SVG}g")
        if g.get("class") == "marker"
        for t in g.iter(f"{SVG}text")
    }
    assert len(label_ys) == 3
    assert float(crowded.get("height") or 0) > float(apart.get("height") or 0)
