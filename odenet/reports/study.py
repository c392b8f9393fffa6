"""The study's answer first: per method over seeds, the headline table, the comparisons at equal accuracy and
at equal solve error read off the test-time sweeps, and the conclusions they carry. Torch-free.

"Cheaper" is only ever read off curves across tolerances on the same images (:mod:`odenet.reports.matched`):
a method is called cheaper or dearer only when the 95% interval of its NFE ratio at equal accuracy or equal
solve error excludes 1.
"""

from __future__ import annotations

from odenet.reports.matched import (ACC_SLACK, Matched, accuracy_verdict, compare_all, matched_table, own_cheapest,
                                    own_cheapest_table, verdict)
from odenet.reports.render import fmt, md_table
from odenet.reports.runs import Run
from odenet.reports.seeds import Estimate, Method


# --------------------------------------------------------------------------- what one run measured


def last_epoch(run: Run, key: str) -> float | None:
    return run.last_epoch_means().get(key)


def epoch_seconds(run: Run) -> float | None:
    """Seconds of training steps in the last epoch: the sum of their ``time_step_ms`` (evaluation excluded)."""
    rows = run.train_rows
    if not rows or "time_step_ms" not in rows[-1]:
        return None
    return sum(r.get("time_step_ms", 0.0) for r in rows if r["epoch"] == rows[-1]["epoch"]) / 1e3


def params(run: Run) -> float | None:
    return (run.summary or {}).get("params")


HEADLINE = (  # column, how to read it from a run, format
    ("test acc", lambda r: r.final_test().get("acc"), ".4f"),
    ("test nfe_forward", lambda r: r.final_test().get("nfe_forward"), ".1f"),
    ("train nfe_forward", lambda r: last_epoch(r, "nfe_forward"), ".1f"),
    ("train nfe_backward", lambda r: last_epoch(r, "nfe_backward"), ".1f"),
    ("act_mem_mb", lambda r: last_epoch(r, "act_mem_mb"), ".1f"),
    ("time/epoch s", epoch_seconds, ".0f"),
)


def headline_table(methods: list[Method]) -> str:
    """One row per method: mean ± 95% interval over its seeds of each headline column."""
    header = ["method", "seeds", *(c for c, _, _ in HEADLINE), "params"]
    rows = []
    for m in methods:
        cells = []
        for column, value, spec in HEADLINE:
            e = m.over_seeds(value)
            cell = "—" if e is None or (column.startswith(("test nfe", "train nfe")) and not m.is_ode) else e.text(spec)
            if column == "time/epoch s" and e is not None and _spread(m, value) > NOISY_SPREAD:
                cell += " (noisy)"
            cells.append(cell)
        p = m.over_seeds(params)
        rows.append([m.name, str(len(m.runs)), *cells, fmt(int(p.mean) if p else None, ",")])
    return md_table(header, rows)


NOISY_SPREAD = 0.2  # seeds' times differing by more than 20% of their mean: the machine's load, not the method


def _spread(m: Method, value) -> float:
    """(max − min) / mean of ``value`` over the method's seeds (0 for one seed)."""
    xs = [v for v in map(value, m.runs) if v is not None]
    return (max(xs) - min(xs)) / (sum(xs) / len(xs)) if len(xs) > 1 and sum(xs) > 0 else 0.0


def provenance(methods: list[Method]) -> str:
    """Where the headline's numbers come from: images, batch sizes, epochs, seeds."""
    runs = [r for m in methods for r in m.runs]
    images = sorted({r.test_images for r in runs if r.test_images})
    batches = sorted({r.config.get("batch_size") for r in runs if r.config.get("batch_size")})
    epochs = sorted({r.epochs_done for r in runs if r.epochs_done})
    seeds = sorted({len(m.runs) for m in methods})
    return (f"{'/'.join(f'{n:,}' for n in images) or 'unknown numbers of'} test images; training batch "
            f"{'/'.join(map(str, batches))}; {'/'.join(map(str, epochs))} epochs; "
            f"{'/'.join(map(str, seeds))} seed{'s' if seeds != [1] else ''} per method")


def table1_by_method(methods: list[Method]) -> str:
    """Chen et al. 2018's Table 1 columns per method over seeds, the paper's MNIST row beside each backbone."""
    from odenet.reports.tables import PAPER_TABLE1

    header = ["method", "dataset", "seeds", "test error %", "params", "act_mem_mb", "train nfe_forward",
              "paper (MNIST): error, params, memory"]
    rows = []
    for m in methods:
        err = m.over_seeds(lambda r: 100 * (1 - r.final_test()["acc"]) if r.final_test() else None)
        mem, nfe, p = m.over_seeds(lambda r: last_epoch(r, "act_mem_mb")), \
            m.over_seeds(lambda r: last_epoch(r, "nfe_forward")), m.over_seeds(params)
        paper = PAPER_TABLE1.get(m.config["backbone"]) if m.name in ("ResNet", "RK-Net (rk4, 6 steps)", "ODE-Net",
                                                                      "MLP") else None
        rows.append([m.name, m.runs[0].dataset, str(len(m.runs)), err.text(".2f") if err else "—",
                     fmt(int(p.mean) if p else None, ","), mem.text(".1f") if mem else "—",
                     nfe.text(".1f") if nfe and m.is_ode else "—",
                     f"{paper['error']}, {paper['params']}, {paper['memory']}" if paper else "—"])
    return md_table(header, rows)


# --------------------------------------------------------------------------- conclusions


def _compare(a: Estimate, b: Estimate, spec: str) -> str:
    if a.separates(b):
        return f"{'above' if a.mean > b.mean else 'below'} it (95% intervals apart)"
    if a.half is None or b.half is None:
        return "one seed: no difference claimed"
    return "the 95% intervals overlap: no difference resolved"


def conclusions(methods: list[Method], reference: Method | None, comparisons: list[Matched]) -> list[str]:
    """The sentences the numbers carry, each naming the table or figure it rests on."""
    acc = {m.name: m.over_seeds(lambda r: r.final_test().get("acc")) for m in methods}
    out = []
    fixed = [m for m in methods if not m.is_ode and acc[m.name]]
    if reference and acc.get(reference.name):
        ref = acc[reference.name]
        for m in fixed:
            out.append(f"{reference.name} reaches test accuracy {ref.text('.4f')}, {m.name} {acc[m.name].text('.4f')}:"
                       f" {reference.name} is {_compare(ref, acc[m.name], '.4f')} ([headline](#headline)).")
    for c in comparisons:
        at_acc, at_err = c.at_accuracy, c.at_error
        parts = []
        if at_acc:
            parts.append(f"at equal accuracy it needs {at_acc.text('.2f')}× the NFE of {reference.name} "
                         f"({accuracy_verdict(c)})")
        if c.short_of_accuracy:
            parts.append(f"on {c.short_of_accuracy} of {c.seeds} seeds no swept tolerance reaches "
                         f"{reference.name}'s accuracy (test accuracy {acc[c.method.name].text('.4f')} against "
                         f"{acc[reference.name].text('.4f')})" if acc.get(c.method.name) and acc.get(reference.name)
                         else f"on {c.short_of_accuracy} of {c.seeds} seeds no swept tolerance reaches "
                              f"{reference.name}'s accuracy")
        if at_err:
            parts.append(f"at equal solve error {at_err.text('.2f')}× ({verdict(at_err, c.short_of_error)})")
        if c.short_of_error:
            parts.append(f"on {c.short_of_error} of {c.seeds} seeds no swept tolerance gets its solve error down "
                         f"to {reference.name}'s")
        if parts:
            out.append(f"{c.method.name}: {'; '.join(parts)} — over {c.seeds} seed{'s' if c.seeds != 1 else ''} "
                       f"([at equal accuracy and equal solve error](#at-equal-accuracy-and-equal-solve-error)).")
    if reference:
        at_training, adaptive, fixed = own_cheapest(reference)
        where = ("[at equal accuracy and equal solve error](#at-equal-accuracy-and-equal-solve-error)" if comparisons
                 else "[the test-time sweep](#the-test-time-sweep)")
        for setting, e in (("dopri5 at a looser tolerance", adaptive), ("a fixed-step solver (rk4 or Euler)", fixed)):
            if at_training and e and e.mean < at_training.mean:
                claim = ("cheaper (95% intervals apart)" if e.separates(at_training)
                         else "the intervals overlap: not claimed cheaper")
                out.append(f"For {reference.name}'s own accuracy at the training tolerance (less {100 * ACC_SLACK:g} "
                           f"point), {setting} needs {e.text('.1f')} NFE against {at_training.text('.1f')} at the "
                           f"training tolerance: {claim} ({where}).")
    out += _growth(methods)
    return out


def _growth(methods: list[Method]) -> list[str]:
    """NFE per training step in the first against the last epoch, where the intervals separate."""
    out = []
    for m in (m for m in methods if m.is_ode):
        def epoch_mean(run: Run, which: int) -> float | None:
            rows = [r for r in run.train_rows if "nfe_forward" in r]
            if not rows:
                return None
            epoch = rows[0]["epoch"] if which == 0 else rows[-1]["epoch"]
            values = [r["nfe_forward"] for r in rows if r["epoch"] == epoch]
            return sum(values) / len(values)

        first, last = m.over_seeds(lambda r: epoch_mean(r, 0)), m.over_seeds(lambda r: epoch_mean(r, -1))
        if first and last and last.separates(first):
            out.append(f"{m.name}'s NFE per training step went from {first.text('.1f')} in the first epoch to "
                       f"{last.text('.1f')} in the last ([NFE over training](#nfe-over-training)).")
    return out


def unresolved(comparisons: list[Matched]) -> list[str]:
    """What the budget could not settle: comparisons whose intervals straddle 1, and missing seeds."""
    floor = {c.method.name for c in comparisons if c.at_loosest and c.at_loosest == c.seeds and not c.short_of_accuracy}
    out = [f"{c.method.name} at {what}" for c in comparisons
           for what, e, short in (("equal accuracy", c.at_accuracy, c.short_of_accuracy),
                                  ("equal solve error", c.at_error, c.short_of_error))
           if (e is not None and verdict(e, short) in ("no difference resolved", "one seed: not claimed")
               or e is not None and short) and not (what == "equal accuracy" and c.method.name in floor)]
    out += [f"{c.method.name} at equal accuracy: the sweep's loosest tolerance is already accurate enough for both "
            f"models; a looser one (or the fixed-step rows) is needed to find where they part"
            for c in comparisons if c.method.name in floor]
    out += [f"{c.method.name}: no comparison for {', '.join(c.missing)}" for c in comparisons if c.missing]
    return out


# --------------------------------------------------------------------------- the sections


def study_sections(methods: list[Method]) -> tuple[list, dict]:
    """The report's first sections (headline, equal accuracy and solve error, NFE over training, what is
    left open) and their figures, for runs grouped into methods over seeds."""
    from odenet.reports.render import Section
    from odenet.reports.study_figures import fig_headline, fig_matched, fig_nfe_training

    caption = provenance(methods)
    reference, comparisons = compare_all(methods)
    figures = {"headline": fig_headline(methods, caption), "nfe_over_training": fig_nfe_training(methods, caption)}
    found = conclusions(methods, reference, comparisons)
    text = ("Per method: the mean over its seeds ± the 95% interval (Student t) of the final model's test "
            f"accuracy and test NFE (at the training tolerance), and of the last training epoch's mean NFE per step, "
            f"activation memory (MiB of tensors saved for backward per step) and seconds of training steps; "
            f"{caption}. Times are sums of the training steps' `time_step_ms`, comparable only within one table "
            f"(the runs shared the machine with each other and with other work); *noisy* marks a method whose seeds' "
            f"times differ by more than {100 * NOISY_SPREAD:g}% of their mean, which is load, not the method. In "
            f"the figure an NFE bar stops at the fewest NFE a seed took (a t-interval of a few seeds can reach "
            f"below it).\n\n"
            + headline_table(methods)
            + ("\n\n**What the numbers show**\n\n" + "\n".join(f"- {s}" for s in found) if found else ""))
    sections = [Section("Headline", text, ["headline"])]
    if reference and comparisons:
        figures["matched"] = fig_matched(methods, caption)
        sections.append(Section(
            "At equal accuracy and equal solve error",
            f"Each method against {reference.name}, seed by seed on the same test images, read off the test-time "
            f"sweep: the NFE at which its dopri5 curve first reaches the reference's accuracy at the training "
            f"tolerance (less {100 * ACC_SLACK:g} point), over the NFE the reference needs for it (linear "
            f"interpolation between tolerances); and the same for the reference's solve error there (the ODE "
            f"block's output error against a float64 solve at a tolerance 100 times tighter, interpolated in log "
            f"error). Ratios are means over seeds ± 95% interval; *cheaper* or *dearer* only where the interval "
            f"excludes 1. The last column is the fewest NFE of a fixed-step rk4 or Euler row reaching that "
            f"accuracy.\n\n" + matched_table(comparisons, reference), ["matched"]))
    elif reference:
        figures["matched"] = fig_matched(methods, caption)
        sections.append(Section("The test-time sweep", f"{reference.name}'s test accuracy and ODE block solve error "
                                f"(against a float64 solve at a tolerance 100 times tighter) across the test-time "
                                f"sweep, mean over seeds ± 95% interval; {caption}.\n\n"
                                + own_cheapest_table(reference), ["matched"]))
    sections.append(Section("NFE over training", f"Mean NFE per training step in each epoch, mean over seeds with "
                                                 f"its 95% band; {caption}.", ["nfe_over_training"]))
    sections.append(Section("Table 1", "Chen et al. 2018's Table 1 columns per method (mean ± 95% interval over "
                                       "seeds), the paper's MNIST numbers beside the backbones it has: its memory "
                                       "column is an asymptotic claim (L layers, L~ evaluations), ours the measured "
                                       f"act_mem_mb of a training step; {caption}.\n\n" + table1_by_method(methods)))
    open_items = unresolved(comparisons)
    if open_items:
        sections.append(Section("What this budget could not settle", "\n".join(f"- {s}" for s in open_items)))
    return sections, figures
