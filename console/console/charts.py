"""Bar charts as geometry for an SVG template: drawn on the server, no chart library, no script."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    x: float
    y: float
    width: float
    height: float
    show_label: bool


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    top: int
    bars: list[Bar]
    baseline: float


def bar_chart(points: list[tuple[str, int]], *, width: int = 480, height: int = 160, every: int = 1) -> BarChart:
    pad_bottom, pad_top = 18, 14
    top = max((v for _, v in points), default=0)
    plot = height - pad_bottom - pad_top
    slot = width / max(len(points), 1)
    bars = []
    for i, (label, value) in enumerate(points):
        h = 0.0 if top == 0 else plot * value / top
        bars.append(
            Bar(
                label=label,
                value=value,
                x=round(i * slot + slot * 0.15, 1),
                y=round(pad_top + plot - h, 1),
                width=round(slot * 0.7, 1),
                height=round(h, 1),
                show_label=i % every == 0,
            )
        )
    return BarChart(width=width, height=height, top=top, bars=bars, baseline=height - pad_bottom)
