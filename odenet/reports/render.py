"""A report as data (sections of Markdown and named matplotlib figures) and how it is written out.

:func:`write_report` writes ``report.md`` with the PNG files beside it and a self-contained
``report.html`` (figures embedded as base64 PNG). Each figure is rendered once, on first use,
and its bytes kept on the :class:`Report`, so the PNG file, the HTML and TensorBoard show the
same image.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Wide tables scroll inside their own box (.scroll) instead of overflowing the page; cells never wrap,
# so a row stays one line and columns stay aligned.
HTML_STYLE = ("body{font-family:system-ui,sans-serif;max-width:80rem;margin:2rem auto;padding:0 1rem;color:#222}"
              ".scroll{overflow-x:auto;margin:1rem 0}table{border-collapse:collapse;font-size:.8rem}"
              "td,th{border:1px solid #ccc;padding:.2rem .4rem;text-align:right;white-space:nowrap}"
              "th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}"
              "img{max-width:100%}code{background:#f4f4f4}")


def fmt(value: Any, spec: str = ".4g") -> str:
    """A table cell: "—" for a missing value (the one glyph for missing, everywhere), ``spec`` for numbers
    ("," groups an int's thousands)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int) and spec == ",":
        return f"{value:,}"
    return format(value, spec)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def png_bytes(figure: Figure) -> bytes:
    """``figure`` rendered as PNG."""
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


@dataclass
class Section:
    title: str
    text: str
    figures: list[str] = field(default_factory=list)  # names in Report.figures, shown after the text


@dataclass
class Report:
    title: str
    sections: list[Section]
    figures: dict[str, Figure]
    files: dict[str, str] = field(default_factory=dict)  # other files written beside it: name → text (CSV)
    _pngs: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    def png(self, name: str) -> bytes:
        """Figure ``name`` as PNG, rendered on first use only."""
        if name not in self._pngs:
            self._pngs[name] = png_bytes(self.figures[name])
        return self._pngs[name]

    def markdown(self, embed: bool = False) -> str:
        """The report as Markdown; figures link to ``NAME.png`` beside it, or are embedded with ``embed``."""
        out = [f"# {self.title}", ""]
        for s in self.sections:
            out += [f"## {s.title}", "", s.text, ""]
            for name in s.figures:
                src = f"data:image/png;base64,{base64.b64encode(self.png(name)).decode()}" if embed else f"{name}.png"
                out += [f"![{name}]({src})", ""]
        return "\n".join(out)


def to_html(report: Report) -> str:
    """The report as one HTML page with its figures embedded."""
    import markdown  # a dependency of tensorboard

    body = markdown.markdown(report.markdown(embed=True), extensions=["tables", "toc"])  # toc: anchors on headings
    body = body.replace("<table>", "<div class='scroll'><table>").replace("</table>", "</table></div>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{report.title}</title>"
            f"<style>{HTML_STYLE}</style></head><body>\n{body}\n</body></html>\n")


def write_report(report: Report, out_dir: str | Path) -> dict[str, Path]:
    """Write report.md (+ PNGs beside it) and a self-contained report.html into ``out_dir``.

    Returns:
        The path of each file written: figure names, "report.md", "report.html" and the report's files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in report.figures:
        written[name] = out / f"{name}.png"
        written[name].write_bytes(report.png(name))
    written["report.md"] = out / "report.md"
    written["report.md"].write_text(report.markdown())
    written["report.html"] = out / "report.html"
    written["report.html"].write_text(to_html(report))
    for name, text in report.files.items():
        written[name] = out / name
        written[name].write_text(text)
    return written


def new_figure(title: str, xlabel: str, ylabel: str, logx: bool = False, logy: bool = False) -> tuple[Figure, Axes]:
    """One report figure and its axes, titled, labelled and gridded; the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    return fig, ax


def pad_x(ax: Axes) -> None:
    """Widen a linear x axis whose data hardly vary (one NFE value drew a 19–21 axis that reads as a range)."""
    lo, hi = ax.dataLim.intervalx
    if ax.get_xscale() != "linear" or not (math.isfinite(lo) and math.isfinite(hi)):
        return
    centre = (lo + hi) / 2
    half = max(0.15 * abs(centre), 2.0)
    if hi - lo < half:
        ax.set_xlim(max(0.0, centre - half) if lo >= 0 else centre - half, centre + half)


def finish_figure(fig: Figure, ax: Axes, empty_note: str | None = None) -> Figure:
    """Add the legend (or ``empty_note`` across an empty plot), lay out and release ``fig`` from pyplot."""
    if empty_note:
        ax.text(0.5, 0.5, empty_note, ha="center", va="center", transform=ax.transAxes, fontsize=9, wrap=True)
    elif ax.get_legend_handles_labels()[0]:
        labels = ax.get_legend_handles_labels()[1]
        if len(labels) > 3 or max(map(len, labels)) > 40:  # long legends go under the axes, off the data
            width, height = fig.get_size_inches()
            fig.set_size_inches(width, height + 0.16 * len(labels))  # room for them: the axes keep their height
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14 * 3.8 / height), ncol=1,
                      frameon=False)
        else:
            ax.legend(fontsize=7)
    fig.tight_layout()
    import matplotlib.pyplot as plt

    plt.close(fig)  # pyplot keeps no reference; the report owns the figure
    return fig
