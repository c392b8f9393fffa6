"""``eval.py --per-sample``: every test image solved with its own step control, beside its batched solve.

After each adaptive setting of the sweep, the same test batches pass twice, alternately and timed:
batched (the sweep's solve; its NFE is the batch's) and per-sample (each ODE block swapped for
:func:`odenet.solve.drivers.solve_per_sample` of its input; stem and head unchanged). Rows, timings and the
gallery images are written beside sweep.csv; :mod:`odenet.reports.per_sample_report` reads them back.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from odenet.evaluate.console import setting_label
from odenet.measure import Clock
from odenet.models.ode import ode_blocks, regularization_off, reset_nfe, take_nfe
from odenet.models.per_sample_blocks import per_sample_blocks
from odenet.reports.per_sample_report import add_per_sample, batching_tax, gallery_indices, write_per_sample_csv
from odenet.train.step import flat_nfe, to_device


@torch.no_grad()
def per_sample_pass(model: nn.Module, loader, device: torch.device, limit: int | None,
                    channels_last: bool = False) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One pass over the test batches at the model's current (adaptive) setting.

    Returns:
        One row per image (see :data:`odenet.reports.per_sample_report.PER_SAMPLE_COLUMNS`) and the seconds spent
        in the batched and in the per-sample forward passes of the same batches.
    """
    clock, rows, seconds = Clock(device), [], {"time_batched_s": 0.0, "time_per_sample_s": 0.0}
    was_training = model.training
    model.eval()
    several = len(ode_blocks(model)) > 1
    with regularization_off(model):  # both sides solve x alone: the same work, timed side by side
        _passes(model, loader, device, limit, channels_last, clock, rows, seconds, several)
    model.train(was_training)
    return rows, seconds


def _passes(model, loader, device, limit, channels_last, clock, rows, seconds, several) -> None:
    _warm_up(model, loader, device, channels_last)
    for b, (images, labels) in enumerate(itertools.islice(loader, limit)):
        images, labels = to_device((images, labels), device, channels_last)
        reset_nfe(model)
        t0 = clock.now()
        model(images)
        seconds["time_batched_s"] += clock.now() - t0
        batched = flat_nfe(take_nfe(model))
        with per_sample_blocks(model) as blocks:
            t0 = clock.now()
            logits = model(images)
            seconds["time_per_sample_s"] += clock.now() - t0
            counts = {name: blk.last for name, blk in blocks.items()}
        confidence, pred = logits.float().softmax(1).max(1)
        rows.extend(_rows(len(rows), b, labels, pred, confidence, counts, batched, several))


def _warm_up(model: nn.Module, loader, device: torch.device, channels_last: bool) -> None:
    """Untimed passes of two images, so the per-sample path's first-call costs land in neither time."""
    images, _ = to_device(next(iter(loader)), device, channels_last)
    model(images[:2])
    with per_sample_blocks(model):
        model(images[:2])
    reset_nfe(model)


def _rows(start: int, batch: int, labels, pred, confidence, counts: dict, batched: dict, several: bool) -> list[dict]:
    nfe = {name: sol.nfe_forward.tolist() for name, sol in counts.items()}
    acc = [sum(t) for t in zip(*(sol.steps_accepted.tolist() for sol in counts.values()))]
    rej = [sum(t) for t in zip(*(sol.steps_rejected.tolist() for sol in counts.values()))]
    out = []
    for i, (y, p, c) in enumerate(zip(labels.tolist(), pred.tolist(), confidence.tolist())):
        row = {"index": start + i, "label": y, "pred": p, "correct": y == p, "confidence": c,
               "nfe_forward": sum(v[i] for v in nfe.values()), "steps_accepted": acc[i], "steps_rejected": rej[i],
               "nfe_forward_batched": int(batched["nfe_forward"]), "batch": batch, "batch_size": len(labels)}
        if several:
            row.update({f"nfe_forward/{name}": v[i] for name, v in nfe.items()})
            row.update({f"nfe_forward_batched/{name}": int(batched[f"nfe_forward/{name}"]) for name in nfe})
        out.append(row)
    return out


def gallery_images(loader, limit: int | None, indices: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """The test images at ``indices`` (loader order) as uint8 (N, H, W, C), each scaled to its own min–max
    (for display only: the inputs are normalised)."""
    picked, seen = {}, 0
    for b, (images, _) in enumerate(loader):
        if (limit is not None and b >= limit) or len(picked) == len(indices):
            break
        for i in range(len(images)):
            if seen + i in indices:
                x = images[i].float().permute(1, 2, 0)
                x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
                picked[seen + i] = (255 * x).round().to(torch.uint8).numpy()
        seen += len(images)
    order = sorted(picked)
    return np.asarray(order, dtype=np.int64), np.stack([picked[i] for i in order])


class PerSampleEval:
    """Collects the per-sample passes of a sweep (``after_setting`` of :func:`sweep_checkpoint`) and writes them."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.timing: list[dict[str, Any]] = []
        self.skipped: list[str] = []
        self.loader, self.limit = None, None

    def __call__(self, run, setting) -> None:
        if setting.tol is None:  # fixed grid (or no solver): every image takes the same steps
            if setting.solver is not None:
                self.skipped.append(setting_label(setting.solver, setting.tol, setting.steps))
            return
        self.loader, self.limit = run.loader, run.limit
        rows, seconds = per_sample_pass(run.model, run.loader, run.device, run.limit, run.channels_last)
        self.rows += [{"solver": setting.solver, "tol": setting.tol, **r} for r in rows]
        self.timing.append({"solver": setting.solver, "tol": setting.tol, "images": len(rows),
                            "batch_size": max(r["batch_size"] for r in rows), **seconds})

    def finish(self, out: Path, report, show: bool = True, tensorboard: bool = True) -> list[dict[str, Any]]:
        """Write per_sample.csv/.json/_images.npz, add the report section, TensorBoard histograms; print the tax."""
        out.mkdir(parents=True, exist_ok=True)
        if not self.rows:
            if show:
                print("--per-sample: no adaptive setting in the sweep; nothing solved per sample")
            return []
        write_per_sample_csv(self.rows, out / "per_sample.csv")
        (out / "per_sample.json").write_text(json.dumps({"timing": self.timing, "skipped": self.skipped}, indent=2)
                                             + "\n")
        wanted = {i for picks in gallery_indices(self.rows).values() for i in picks["most"] + picks["least"]}
        index, images = gallery_images(self.loader, self.limit, wanted)
        np.savez_compressed(out / "per_sample_images.npz", index=index, images=images)
        dataset = json.loads((out / "sweep.json").read_text())["meta"].get("dataset") \
            if (out / "sweep.json").is_file() else None  # written just before, by the sweep this pass belongs to
        add_per_sample(report, out, dataset)
        if tensorboard:
            self._histograms(out)
        tax = batching_tax(self.rows, self.timing)
        if show:
            print(tax_lines(tax, self.skipped))
        return tax

    def _histograms(self, out: Path) -> None:
        from odenet.run.tensorboard import write_histograms

        solvers = list(dict.fromkeys(r["solver"] for r in self.rows))
        for solver in solvers:
            tols = list(dict.fromkeys(r["tol"] for r in self.rows if r["solver"] == solver))
            series = [[r["nfe_forward"] for r in self.rows if r["solver"] == solver and r["tol"] == t] for t in tols]
            tag = "sample/nfe_forward" if len(solvers) == 1 else f"sample/nfe_forward/{solver}"
            write_histograms(str(out), tag, series, [f"{solver} tol {t:g}" for t in tols])


def tax_lines(tax: list[dict[str, Any]], skipped: list[str]) -> str:
    """What eval.py prints at the end: the batching tax and the throughput ratio per setting."""
    lines = [f"per-sample {t['solver']} tol {t['tol']:g} ({t['images']:,} images, batch {t['batch_size']}): "
             f"mean NFE per image {t['nfe_per_sample']:.2f} alone vs {t['nfe_batched']:.2f} batched, batching tax "
             f"{100 * t['tax']:.1f}%; {t['images_per_s_per_sample']:.1f} vs {t['images_per_s_batched']:.1f} "
             f"images/s, per-sample/batched throughput {t['throughput_ratio']:.3f}" for t in tax]
    if skipped:
        lines.append(f"per-sample: skipped fixed-grid settings {', '.join(skipped)} (no per-image step control)")
    return "\n".join(lines)
