"""Per-sample evaluation (``eval.py --per-sample``): per_sample.csv, its statistics and its report section.

Each test image was solved with its own adaptive step control (:func:`odenet.solve.drivers.solve_per_sample`),
and, side by side, in the batch the sweep solves it in. A row is one image at one setting; a batch
solve evaluates f ``nfe_forward_batched`` times on every image of its batch, so the batching tax is
the share of those evaluations beyond what each image needed alone: ``1 - mean(nfe_forward) /
mean(nfe_forward_batched)``. It can be negative: the batch's error norm is an RMS over all images, so
a hard image may need more steps alone than in a batch of easy ones. Torch-free (numpy and matplotlib).
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from odenet.errors import UserError
from odenet.naming import class_name
from odenet.reports.render import Report, Section, finish_figure, fmt, md_table, new_figure
from odenet.solve import ADAPTIVE_SOLVERS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PER_SAMPLE_COLUMNS = ("solver", "tol", "index", "label", "pred", "correct", "confidence", "nfe_forward",
                      "steps_accepted", "steps_rejected", "nfe_forward_batched", "batch", "batch_size")
INT_COLUMNS = {"index", "label", "pred", "nfe_forward", "steps_accepted", "steps_rejected", "nfe_forward_batched",
               "batch", "batch_size"}
GALLERY = 16  # most and least expensive images shown per setting
QUANTILES = (("min", 0.0), ("10%", 0.1), ("50%", 0.5), ("90%", 0.9), ("max", 1.0))
NOTES = ("`nfe_forward`: evaluations of f for this image solved alone with its own step control (summed over ODE "
         "blocks; 2 + stages × steps per block), as a batch-of-1 solve counts them. `nfe_forward_batched`: NFE of "
         "the batch solve this image was in (the sweep's batch, the same images in the same order; every image of "
         "a batch shares it). Batching tax: 1 − mean per-image NFE / mean batched NFE per image, the share of a "
         "batched solve's evaluations beyond what each image needed; negative where images alone need more "
         "steps than in a batch (the batch's error norm is an RMS over all its images). images/s: the per-sample "
         "and the batched forward pass of the same batches, timed alternately in one run.")


def write_per_sample_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """The rows as CSV: the fixed columns, then the per-block ones (``nfe_forward/<block>``…) in first-seen order."""
    extra = list(dict.fromkeys(k for r in rows for k in r if k not in PER_SAMPLE_COLUMNS))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*PER_SAMPLE_COLUMNS, *extra])
        writer.writeheader()
        writer.writerows(rows)


def read_per_sample_csv(path: Path) -> list[dict[str, Any]]:
    """per_sample.csv back as typed rows (ints, floats, ``correct`` as bool), each cell checked.

    Raises:
        UserError: the file cannot be read as CSV text, lacks the header or any row, or has a short row or a cell
            that is not of its column's kind (a count below 0, a batched NFE below 1, a confidence outside
            [0, 1], ...); one sentence naming the file, its line and the fix.
    """
    fix = "re-run eval.py --per-sample on the checkpoint, or delete it"

    def refuse(what: str) -> UserError:
        return UserError(f"{path} {what}; the file is damaged: {fix}")

    def cell(number: int, key: str, value: str) -> Any:
        least = 1 if key in ("nfe_forward_batched", "batch_size") or key.startswith("nfe_forward_batched/") else 0
        try:
            if key == "correct":
                if value in ("True", "False"):
                    return value == "True"
            elif key in INT_COLUMNS or key.startswith(("nfe_forward/", "nfe_forward_batched/")):
                whole = float(value)
                if whole.is_integer() and whole >= least:
                    return int(whole)
            elif key in ("tol", "confidence"):
                real = float(value)
                if math.isfinite(real) and (0 < real if key == "tol" else 0 <= real <= 1):
                    return real
            elif key != "solver" or value in ADAPTIVE_SOLVERS:  # solved per image: adaptive solvers only
                return value
        except ValueError:
            pass
        kind = {"correct": "True or False", "tol": "a positive number", "confidence": "a number in [0, 1]",
                "solver": "an adaptive solver's name"}.get(key, f"a whole number of at least {least}")
        raise refuse(f"line {number} has {key} {value!r}, not {kind}")

    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            rows, header = list(reader), reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise refuse(f"cannot be read as CSV text ({getattr(exc, 'strerror', None) or exc})") from None
    missing = [c for c in PER_SAMPLE_COLUMNS if c not in header]
    if missing or not rows:
        raise refuse(f"has no {missing[0]} column in its first line (no per_sample.csv header)" if missing else
                     "has a header but no rows")
    for number, r in enumerate(rows, start=2):
        if None in r or None in r.values():
            raise refuse(f"line {number} has {'fewer' if None in r.values() else 'more'} cells than the header's "
                         f"{len(header)}")
        r.update({k: cell(number, k, v) for k, v in r.items()})
    return rows


def by_setting(rows: list[dict[str, Any]]) -> dict[tuple[str, float], list[dict[str, Any]]]:
    """Rows grouped by (solver, tol), in order of first appearance."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["solver"], r["tol"])].append(r)
    return dict(groups)


def ranked(group: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A setting's rows from cheapest to most expensive; ties by image index, so the order is deterministic."""
    return sorted(group, key=lambda r: (r["nfe_forward"], r["index"]))


def gallery_indices(rows: list[dict[str, Any]], k: int = GALLERY) -> dict[tuple[str, float], dict[str, list[int]]]:
    """Per setting the image indices of the ``k`` most (most expensive first) and ``k`` least expensive."""
    out = {}
    for key, group in by_setting(rows).items():
        order = ranked(group)
        out[key] = {"most": [r["index"] for r in order[::-1][:k]], "least": [r["index"] for r in order[:k]]}
    return out


def quantiles(values: list[float]) -> dict[str, float]:
    """min, 10%, 50%, 90%, max (linear interpolation) and mean."""
    a = np.asarray(values, dtype=float)
    out = {name: float(np.quantile(a, q)) for name, q in QUANTILES}
    out["mean"] = float(a.mean())
    return out


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (what Spearman's coefficient ranks by)."""
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a))
    for value in np.unique(a):
        tied = a == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def pearson(x: list[float], y: list[float]) -> float:
    """Pearson's r; NaN when either side does not vary."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho: Pearson's r of the tie-averaged ranks."""
    return pearson(list(_ranks(np.asarray(x, dtype=float))), list(_ranks(np.asarray(y, dtype=float))))


def nfe_bins(group: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accuracy per NFE bin, cheapest first: about a tenth of the images each (a quarter below 100 images),
    made of whole NFE levels — images of equal NFE are never split between bins, so a bin's accuracy is
    that of its NFE values and not of an arbitrary tie order. NFE takes few values (dopri5: 2 + 6 per
    step), so there are often fewer bins than that: one when every image took the same NFE."""
    n_bins = 10 if len(group) >= 100 else 4
    target = len(group) / n_bins
    levels = defaultdict(list)
    for r in group:
        levels[r["nfe_forward"]].append(r)
    chunks, current = [], []
    for level in sorted(levels):
        current += levels[level]
        if len(current) >= target:
            chunks.append(current)
            current = []
    if current:
        chunks.append(current)
    return [{"bin": k + 1, "of": len(chunks), "images": len(c), "nfe_min": min(r["nfe_forward"] for r in c),
             "nfe_max": max(r["nfe_forward"] for r in c), "acc": sum(r["correct"] for r in c) / len(c)}
            for k, c in enumerate(chunks)]


def costliest(group: list[dict[str, Any]], share: float = 0.1) -> list[dict[str, Any]] | None:
    """The images of the highest NFE levels, taken whole from the top until they hold at least ``share`` of
    the images, the cheapest level never included (so fewer than ``share`` when only it is left: the
    costliest images are then those above it); None when every image took the same NFE."""
    levels = sorted({r["nfe_forward"] for r in group}, reverse=True)
    picked: list[dict[str, Any]] = []
    for level in levels[:-1]:
        picked += [r for r in group if r["nfe_forward"] == level]
        if len(picked) >= share * len(group):
            break
    return picked or None


def batching_tax(rows: list[dict[str, Any]], timing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting: mean per-image and batched NFE per image, the tax, and per-sample vs batched images/s."""
    times = {(t["solver"], t["tol"]): t for t in timing}
    out = []
    for (solver, tol), group in by_setting(rows).items():
        alone = sum(r["nfe_forward"] for r in group) / len(group)
        batched = sum(r["nfe_forward_batched"] for r in group) / len(group)
        t = times.get((solver, tol), {})
        ps = len(group) / t["time_per_sample_s"] if t.get("time_per_sample_s") else math.nan
        bt = len(group) / t["time_batched_s"] if t.get("time_batched_s") else math.nan
        out.append({"solver": solver, "tol": tol, "images": len(group),
                    "batch_size": max(r["batch_size"] for r in group),
                    "nfe_per_sample": alone, "nfe_batched": batched, "tax": 1 - alone / batched,
                    "images_per_s_per_sample": ps, "images_per_s_batched": bt, "throughput_ratio": ps / bt})
    return out


def _label(key: tuple[str, float]) -> str:
    return f"{key[0]} tol {key[1]:g}"


def _slug(key: tuple[str, float]) -> str:
    return f"{key[0]}_tol{key[1]:g}"


def _note(group: list[dict[str, Any]]) -> str:
    return f"{len(group):,} images, batch {max(r['batch_size'] for r in group)}"


def tables(rows: list[dict[str, Any]], timing: list[dict[str, Any]]) -> str:
    """Quantiles, correlations, accuracy per NFE bin and the batching tax, as Markdown."""
    groups = by_setting(rows)
    q_body, c_body, b_body = [], [], []
    for key, g in groups.items():
        q = quantiles([r["nfe_forward"] for r in g])
        q_body.append([_label(key), *(fmt(q[n], ".1f") for n, _ in QUANTILES), fmt(q["mean"], ".2f"), _note(g)])
        nfe, conf = [r["nfe_forward"] for r in g], [r["confidence"] for r in g]
        right = [r["nfe_forward"] for r in g if r["correct"]]
        wrong = [r["nfe_forward"] for r in g if not r["correct"]]
        c_body.append([_label(key), fmt(spearman(nfe, conf), ".3f"), fmt(pearson(nfe, conf), ".3f"),
                       fmt(np.mean(right) if right else None, ".2f"), fmt(np.mean(wrong) if wrong else None, ".2f"),
                       _note(g)])
        for b in nfe_bins(g):
            b_body.append([_label(key), f"{b['bin']}/{b['of']}", f"{b['nfe_min']}–{b['nfe_max']}", str(b["images"]),
                           fmt(b["acc"], ".3f"), _note(g)])
    t_body = [[_label((t["solver"], t["tol"])), f"{t['images']:,}", str(t["batch_size"]),
               fmt(t["nfe_per_sample"], ".2f"), fmt(t["nfe_batched"], ".2f"), f"{100 * t['tax']:.1f}%",
               fmt(t["images_per_s_per_sample"], ".1f"), fmt(t["images_per_s_batched"], ".1f"),
               fmt(t["throughput_ratio"], ".3f")] for t in batching_tax(rows, timing)]
    return "\n\n".join([
        "**Per-image NFE** (quantiles over images)\n\n"
        + md_table(["setting", *(n for n, _ in QUANTILES), "mean", "from"], q_body),
        "**NFE against confidence** (max softmax of the per-sample forward) and correctness\n\n"
        + md_table(["setting", "Spearman ρ", "Pearson r", "mean NFE correct", "mean NFE wrong", "from"], c_body),
        "**Accuracy per NFE bin** (about a tenth of the images each, cheapest first, whole NFE levels: images of "
        "equal NFE share a bin): are expensive images the ones it gets wrong?\n\n"
        + md_table(["setting", "bin", "nfe_forward", "images", "acc", "from"], b_body),
        "**The batching tax**\n\n" + md_table(["setting", "images", "batch", "mean per-image NFE",
                                              "batched NFE per image", "tax", "images/s per-sample",
                                              "images/s batched", "per-sample / batched"], t_body),
        NOTES])


def figures(rows: list[dict[str, Any]], images: dict[int, np.ndarray] | None = None,
            dataset: str | None = None) -> dict[str, Figure]:
    """Histogram, NFE vs confidence, box plots (correct/wrong, per class), accuracy per NFE bin, galleries
    (classes named as ``dataset`` names them)."""
    groups = by_setting(rows)
    note = "; ".join(f"{_label(k)}: {_note(g)}" for k, g in groups.items())
    figs = {}
    fig, ax = new_figure(f"per-image nfe_forward\n{note}", "nfe_forward (image solved alone)", "images")
    edges = np.histogram_bin_edges([r["nfe_forward"] for r in rows], bins=min(30, len({r["nfe_forward"] for r in rows})
                                                                         or 1))
    for key, g in groups.items():
        ax.hist([r["nfe_forward"] for r in g], bins=edges, alpha=0.5, label=_label(key))
    figs["per_sample_nfe_hist"] = finish_figure(fig, ax)
    fig, ax = new_figure(f"nfe_forward vs confidence\n{note}", "confidence (max softmax)", "nfe_forward")
    for key, g in groups.items():
        rho = spearman([r["nfe_forward"] for r in g], [r["confidence"] for r in g])
        ax.scatter([r["confidence"] for r in g], [r["nfe_forward"] for r in g], s=8, alpha=0.6,
                   label=f"{_label(key)} (Spearman {rho:.2f})")
    figs["per_sample_nfe_vs_confidence"] = finish_figure(fig, ax)
    figs["per_sample_nfe_correct"] = _boxes(groups, note)
    for key, g in groups.items():
        classes = sorted({r["label"] for r in g})
        fig, ax = new_figure(f"nfe_forward per class, {_label(key)}\n{_note(g)}", "true class", "nfe_forward")
        ax.boxplot([[r["nfe_forward"] for r in g if r["label"] == c] for c in classes])
        ax.set_xticks(range(1, len(classes) + 1), [class_name(dataset, c) for c in classes], rotation=45,
                      ha="right", fontsize=7)
        figs[f"per_sample_nfe_by_class_{_slug(key)}"] = finish_figure(fig, ax)
    fig, ax = new_figure(f"accuracy per NFE quantile bin (cheapest first)\n{note}", "NFE bin", "test acc")
    for key, g in groups.items():
        bins = nfe_bins(g)
        ax.plot([b["bin"] for b in bins], [b["acc"] for b in bins], "o-", label=_label(key))
    figs["per_sample_acc_by_nfe"] = finish_figure(fig, ax)
    if images:
        for key, g in groups.items():
            figs[f"per_sample_gallery_{_slug(key)}"] = _gallery(key, g, images, dataset)
    return figs


def _boxes(groups: dict, note: str) -> Figure:
    """NFE of correct and wrong images, two boxes per setting."""
    fig, ax = new_figure(f"nfe_forward of correct and wrong images\n{note}", "setting", "nfe_forward")
    data, names = [], []
    for key, g in groups.items():
        for ok in (True, False):
            values = [r["nfe_forward"] for r in g if r["correct"] == ok]
            data.append(values or [math.nan])
            names.append(f"{key[1]:g} {'correct' if ok else 'wrong'}\n({len(values)})")
    ax.boxplot(data)
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.tick_params(axis="x", labelsize=7)
    return finish_figure(fig, ax)


def _gallery(key: tuple[str, float], group: list[dict[str, Any]], images: dict[int, np.ndarray],
             dataset: str | None = None) -> Figure:
    """The GALLERY most expensive (top rows) and least expensive (bottom rows) images: true class, predicted
    class (when wrong), NFE."""
    from matplotlib.figure import Figure

    picks = gallery_indices(group)[key]
    by_index = {r["index"]: r for r in group}
    cols = 8
    rows_each = math.ceil(GALLERY / cols)
    fig = Figure(figsize=(cols * 1.2, 2 * rows_each * 1.45 + 0.6))
    axes = fig.subplots(2 * rows_each, cols)
    fig.suptitle(f"{_label(key)}, {_note(group)}: top {rows_each} rows the {GALLERY} most expensive images, "
                 f"bottom {rows_each} the {GALLERY} least (true class; red: wrong, → predicted)", fontsize=8)
    for part, indices in enumerate((picks["most"], picks["least"])):
        for k in range(rows_each * cols):
            ax = axes[part * rows_each + k // cols, k % cols]
            ax.axis("off")
            if k < len(indices) and indices[k] in images:
                r = by_index[indices[k]]
                img = images[indices[k]]
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray")
                title = class_name(dataset, r["label"])
                if not r["correct"]:
                    title += f" → {class_name(dataset, r['pred'])}"
                ax.set_title(f"{title}\nnfe {r['nfe_forward']}", fontsize=6, color="black" if r["correct"] else "red")
    fig.tight_layout()
    return fig


def per_sample_section(rows: list[dict[str, Any]], timing: list[dict[str, Any]],
                       images: dict[int, np.ndarray] | None = None, skipped: list[str] | None = None,
                       dataset: str | None = None) -> tuple[Section, dict[str, Figure]]:
    """The report section of a per-sample evaluation and its figures."""
    figs = figures(rows, images, dataset)
    text = tables(rows, timing)
    if skipped:
        text += "\n\nSkipped (fixed-grid solvers have no per-image step control): " + ", ".join(skipped) + "."
    return Section("Per-sample evaluation: each image solved with its own step control", text, list(figs)), figs


def add_per_sample(report: Report, out_dir: Path, dataset: str | None = None) -> None:
    """Read per_sample.csv, per_sample.json (timing, skipped settings) and per_sample_images.npz in ``out_dir``
    and append their section to ``report`` (classes named as ``dataset`` names them)."""
    rows = read_per_sample_csv(out_dir / "per_sample.csv")
    saved = json.loads((out_dir / "per_sample.json").read_text())
    timing, skipped = saved["timing"], saved.get("skipped")
    npz = out_dir / "per_sample_images.npz"
    images = None
    if npz.is_file():
        with np.load(npz) as data:
            images = dict(zip(data["index"].tolist(), data["images"]))
    section, figs = per_sample_section(rows, timing, images, skipped, dataset)
    report.sections.append(section)
    report.figures.update(figs)
