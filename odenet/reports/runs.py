"""Training-run directories as saved: config.yaml, metrics.jsonl, summary.json and sweep.json."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odenet.errors import UserError
from odenet.naming import run_label
from odenet.reports.per_sample_report import by_setting, read_per_sample_csv
from odenet.run.files import read_document
from odenet.run.metrics import MetricsError, read_training_metrics, shown

PER_SAMPLE_CSV = "per_sample.csv"


class ReportError(UserError):
    """Input that cannot be reported on; the message says which and why."""


@dataclass
class Run:
    """One training run directory, as saved."""

    path: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    summary: dict[str, Any] | None
    sweep: list[dict[str, Any]] = field(default_factory=list)
    sweep_meta: dict[str, Any] = field(default_factory=dict)
    display: str | None = None  # the label among other runs (set by label_runs); None: run_label alone
    folder: str | None = None  # the folder's name among other runs: parent/name where names collide

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_ode(self) -> bool:
        return self.config.get("solver") is not None

    @property
    def adjoint(self) -> bool:
        return bool(self.config.get("adjoint"))

    @property
    def label(self) -> str:
        return self.display or run_label(self.config)

    @property
    def dataset(self) -> str:
        return self.config.get("dataset") or "—"

    @property
    def epochs_done(self) -> int | None:
        """The last epoch with a test evaluation (else the last training epoch), None before any."""
        rows = self.test_rows or self.train_rows
        return rows[-1]["epoch"] if rows else None

    @property
    def test_images(self) -> int | None:
        """Images of the final test evaluation (rows written before the count was logged: None)."""
        return self.final_test().get("images")

    @property
    def status(self) -> str:
        """"complete" / "incomplete", with why the numbers are not a full run's ("smoke: ...")."""
        return run_status(self.config, self.summary is not None, self.epochs_done)

    @property
    def train_rows(self) -> list[dict]:
        return [r for r in self.rows if r["split"] == "train"]

    @property
    def test_rows(self) -> list[dict]:
        return [r for r in self.rows if r["split"] == "test"]

    def final_test(self) -> dict[str, Any]:
        """The last evaluation on the test split, or {} when there was none."""
        return self.test_rows[-1] if self.test_rows else {}

    def last_epoch_means(self) -> dict[str, float]:
        """Each numeric key's mean over the last epoch's training steps."""
        rows = self.train_rows
        if not rows:
            return {}
        last = [r for r in rows if r["epoch"] == rows[-1]["epoch"]]
        keys = {k for r in last for k, v in r.items() if isinstance(v, (int, float)) and k not in ("epoch", "step")}
        return {k: statistics.fmean(r[k] for r in last if k in r) for k in keys}


def load_run(path: str | Path) -> Run:
    """The run saved in ``path``, every file checked before any of it is reported.

    Raises:
        ReportError: ``path`` has no config.yaml; a file that cannot be read, is not valid JSON/YAML or holds
            values of the wrong kind; or a file older than the run or sweep it would be shown beside (a
            sweep of an earlier last.pt, per_sample.csv of an earlier sweep). One sentence naming the file
            and the fix.
    """
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise ReportError(f"{path} is not a run directory (no config.yaml)")
    leave_out = f"restore it, or leave {path} out of the report"
    config = _mapping(_read(path / "config.yaml", leave_out), path / "config.yaml", "a mapping of option: value",
                      leave_out)
    if config.get("backbone") is None:
        raise ReportError(f"{path / 'config.yaml'} names no backbone, so {path} is no train.py run (a dynamics "
                          f"experiment's has its own report: odenet-dynamics report); leave it out of the report")
    _check_kinds(config, CONFIG_KINDS, path / "config.yaml", leave_out)
    try:
        rows = read_training_metrics(path / "metrics.jsonl")
    except MetricsError as exc:  # report callers catch one error family
        raise ReportError(f"{exc} (or leave {path} out of the report)") from exc
    _check_measured(rows, path / "metrics.jsonl", config.get("solver") is not None, leave_out)
    summary = _summary(path / "summary.json", rows) if (path / "summary.json").is_file() else None
    sweep, meta = _sweep(path / "sweep.json", rows) if (path / "sweep.json").is_file() else ([], {})
    _check_per_sample(path, sweep, meta)
    return Run(path, config, rows, summary, sweep, meta)


# What a value of each kind is; the checks name the kind when a value is not one.
TEXT, WHOLE, NUMBER, FLAG, MAPPING, TEXTS = ("text", "a whole number", "a number", "true or false", "a mapping",
                                             "a list of text")
CONFIG_KINDS = {**dict.fromkeys(("backbone", "dataset", "solver", "first_step", "optimizer", "schedule", "amp",
                                 "device", "on_solver_failure", "data_dir", "out_dir", "run_name"), TEXT),
                **dict.fromkeys(("epochs", "batch_size", "test_batch_size", "limit_train_batches", "limit_test_batches",
                                 "steps", "seed", "augment_dim", "width", "max_num_steps", "per_sample_every",
                                 "checkpoint_every", "threads", "workers"), WHOLE),
                **dict.fromkeys(("tol", "rtol", "atol", "adjoint_tol", "t1", "lr", "momentum", "weight_decay",
                                 "kinetic_reg", "jacobian_reg", "error_reg", "steer", "lr_gamma", "warmup_epochs",
                                 "label_smoothing", "grad_clip"), NUMBER),
                **dict.fromkeys(("adjoint", "seminorm", "fast_rk", "progress", "compile", "channels_last",
                                 "data_on_device", "download", "force"), FLAG)}
SUMMARY_KINDS = {"params": WHOLE, "best_acc": NUMBER, "best_epoch": WHOLE, "epochs_completed": WHOLE, "steps": WHOLE,
                 "skipped_batches": WHOLE, "world_size": WHOLE, "wall_time_s": NUMBER, "rss_peak_mb": NUMBER,
                 "test": MAPPING, "train_last_epoch": MAPPING, "config": MAPPING, "versions": MAPPING,
                 "run_dir": TEXT, "data_source": TEXT, "device": TEXT}
META_KINDS = {**dict.fromkeys(("checkpoint", "backbone", "dataset", "train_setting", "train_solver", "reference",
                               "device"), TEXT),
              **dict.fromkeys(("images", "batch_size", "act_mem_batch_size", "train_test_images", "epoch"), WHOLE),
              "train_tol": NUMBER, "limited": FLAG, "per_sample": FLAG, "timing": MAPPING, "still_an_ode": MAPPING,
              "config": MAPPING, "notes": TEXTS}
SHARES = ("acc", "best_acc")  # fractions of images: between 0 and 1


def _read(path: Path, fix: str) -> Any:
    try:
        return read_document(path, fix)
    except UserError as exc:
        raise ReportError(str(exc)) from None


def _mapping(value: Any, path: Path, what: str, fix: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReportError(f"{path} holds {_kind_of(value)}, not {what}; the file is damaged: {fix}")
    return value


def _kind_of(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "true or false", type(None): "nothing",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _is(value: Any, kind: str) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {TEXT: isinstance(value, str), WHOLE: number and isinstance(value, int) and value >= 0,
            NUMBER: number, FLAG: isinstance(value, bool), MAPPING: isinstance(value, dict),
            TEXTS: isinstance(value, list) and all(isinstance(v, str) for v in value)}[kind]


def _check_kinds(values: dict[str, Any], kinds: dict[str, str], path: Path, fix: str, where: str = "",
                 required: tuple[str, ...] = ()) -> None:
    """Each of ``values``' keys named in ``kinds`` is None or of its kind (``required`` ones present and not None);
    a share (acc) lies in [0, 1]."""
    for key in required:
        if values.get(key) is None:
            raise ReportError(f"{path}{where} has no {key}; the file is damaged: {fix}")
    for key, kind in kinds.items():
        value = values.get(key)
        if value is not None and not _is(value, kind):
            raise ReportError(f"{path}{where} has {key} {shown(value)}, not {kind}; the file is damaged: {fix}")
        if key in SHARES and value is not None and not 0 <= value <= 1:
            raise ReportError(f"{path}{where} has {key} {shown(value)}, not a share between 0 and 1; the file is "
                              f"damaged: {fix}")


def _numbers(values: dict[str, Any], path: Path, where: str, fix: str, text: tuple[str, ...] = ()) -> None:
    """Every value a number (or null, or true/false), but for the ``text`` keys (text or null)."""
    for key, value in values.items():
        ok = (value is None or isinstance(value, str)) if key in text else \
            (value is None or isinstance(value, (bool, int, float)))
        if not ok:
            kind = "text" if key in text else "a number"
            raise ReportError(f"{path}{where} has {key} {shown(value)}, not {kind}; the file is damaged: {fix}")
    _check_kinds(values, dict.fromkeys(SHARES, NUMBER), path, fix, where)


# What the report reads from every row of a split (and, of an ODE run's training rows, its solver's measurements).
MEASURED = {"train": (), "test": ("acc",), "skipped": ()}
MEASURED_ODE = ("nfe_forward", "nfe_backward", "act_mem_mb", "time_forward_ms")


def _check_measured(rows: list[dict[str, Any]], path: Path, ode: bool, fix: str) -> None:
    for number, row in enumerate(rows, start=1):
        needed = MEASURED[row["split"]] + (MEASURED_ODE if ode and row["split"] == "train" else ())
        lacking = [key for key in needed if key not in row]
        if lacking:
            raise ReportError(f"{path} line {number} lacks {lacking[0]}, which train.py writes in every "
                              f"{row['split']} row of {'an ODE' if ode else 'a'} run; the file is damaged: {fix}")
        _check_kinds(row, dict.fromkeys(SHARES, NUMBER), path, fix, f" line {number}")


def _summary(path: Path, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """summary.json, checked; None when it is older than the run (written at the end of fewer epochs than the
    run has logged since: a run continued with more --epochs, not finished yet)."""
    fix = (f"delete it (train.py --resume {path.parent / 'last.pt'} writes it again from metrics.jsonl), or leave "
           f"{path.parent} out of the report")
    summary = _mapping(_read(path, fix), path, "a run's summary (a mapping)", fix)
    _check_kinds(summary, SUMMARY_KINDS, path, fix)
    for part in ("test", "train_last_epoch"):
        _numbers(summary.get(part) or {}, path, f" ({part})", fix, text=("split",))
    epochs = [r["epoch"] for r in rows if r["split"] == "test"]
    done = summary.get("epochs_completed")
    return None if epochs and done is not None and done < max(epochs) else summary


def _sweep(path: Path, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """sweep.json's rows and meta, checked; refused when it is of an earlier last.pt than the run's."""
    fix = f"re-run eval.py --checkpoint {path.parent / 'last.pt'}, or delete it"
    saved = _mapping(_read(path, fix), path, "a sweep (a mapping with rows and meta)", fix)
    meta = _mapping(saved.get("meta") or {}, path, "a sweep's meta (a mapping)", fix)
    _check_kinds(meta, META_KINDS, path, fix, " (meta)")
    sweep = saved.get("rows") or []
    if not isinstance(sweep, list):
        raise ReportError(f"{path} has rows that are {_kind_of(sweep)}, not a list; the file is damaged: {fix}")
    for number, row in enumerate(sweep, start=1):
        where = f" (row {number})"
        _mapping(row, path, f"a sweep row (a mapping) in row {number}", fix)
        _check_kinds(row, {"solver": TEXT, "steps": WHOLE, "images": WHOLE}, path, fix, where, required=("acc",))
        _numbers(row, path, where, fix, text=("solver",))
        if row.get("solver") is not None:
            _check_kinds(row, {}, path, fix, where, required=("nfe_forward", "time_ms"))
    epochs = [r["epoch"] for r in rows if r["split"] == "test"]
    swept = meta.get("epoch")
    if Path(str(meta.get("checkpoint", ""))).name == "last.pt" and swept is not None and epochs and \
            swept < max(epochs):
        raise ReportError(f"{path} is the sweep of the run's last.pt after epoch {swept}, but the run has trained "
                          f"{max(epochs)} epochs since: it is out of date; {fix}")
    return sweep, meta


def _check_per_sample(path: Path, sweep: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """per_sample.csv beside a sweep must be that sweep's: written with --per-sample, of its settings and images."""
    csv_path = path / PER_SAMPLE_CSV
    if not csv_path.is_file() or not sweep:
        return
    fix = (f"delete it (with per_sample.json and per_sample_images.npz), or re-run eval.py --per-sample --checkpoint "
           f"{path / 'last.pt'}")
    stale = f"{csv_path} is older than the sweep beside it ({path / 'sweep.json'}, "
    if meta.get("per_sample") is False:
        raise ReportError(f"{stale}written without --per-sample): it belongs to an earlier sweep; {fix}")
    settings = {(r.get("solver"), r.get("tol")) for r in sweep}
    for (solver, tol), group in by_setting(read_per_sample_csv(csv_path)).items():
        if (solver, tol) not in settings or (isinstance(meta.get("images"), int) and len(group) != meta["images"]):
            raise ReportError(f"{stale}which has no {solver} tol {tol:g} over {len(group)} images): it belongs to an "
                              f"earlier sweep; {fix}")


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Run directories among ``paths`` or directly inside them, in sorted order.

    Raises:
        ReportError: a path does not exist, or none holds a run directory.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.yaml").is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(d for d in p.iterdir() if (d / "config.yaml").is_file()))
        else:
            raise ReportError(f"{p} does not exist")
    if not found:
        raise ReportError(f"no run directories (folders with config.yaml) in {', '.join(map(str, paths))}")
    return [load_run(p) for p in found]


def common_parent(paths: list[Path]) -> Path:
    """The deepest folder holding every one of ``paths`` (where a report of them goes by default)."""
    parents = [p.resolve().parent for p in paths]
    common = parents[0]
    while any(common not in [p, *p.parents] for p in parents):
        common = common.parent
    return common


SMOKE_BATCHES = 100  # fewer training batches per epoch than this: a smoke run
SHORT_EPOCHS = 5  # fewer epochs than this is a smoke run: accuracy still climbing steeply, far from converged


def run_status(config: dict[str, Any], finished: bool, epochs_done: int | None = None) -> str:
    """A run's status cell: "complete" or "incomplete", plus "smoke (...)" or "short (...)" saying why
    its numbers are not a full run's.

    Smoke: ``limit_test_batches`` set, or ``limit_train_batches`` below :data:`SMOKE_BATCHES` (its numbers
    check that the code runs, not what the model can do); short: fewer than :data:`SHORT_EPOCHS` epochs or
    epochs cut to ``limit_train_batches`` of at least SMOKE_BATCHES batches (a budgeted run, e.g. the
    study's 235 batches of 128: trained on purpose, far from converged).
    """
    reasons = []
    if config.get("limit_train_batches"):
        reasons.append(f"{config['limit_train_batches']} train batches/epoch")
    if config.get("limit_test_batches"):
        n = config["limit_test_batches"]
        reasons.append(f"{n} test batch{'es' if n != 1 else ''}")
    epochs = config.get("epochs") if finished or epochs_done is None else epochs_done
    if epochs is not None and epochs < SHORT_EPOCHS:
        reasons.append(f"{epochs} epoch{'s' if epochs != 1 else ''}")
    state = "complete" if finished else "incomplete"
    smoke = (config.get("limit_train_batches") or SMOKE_BATCHES) < SMOKE_BATCHES or config.get("limit_test_batches")
    kind = "smoke" if smoke else "short"
    return f"{state}, {kind} ({', '.join(reasons)})" if reasons else state


def is_smoke(run: Run) -> bool:
    """A smoke or short run (see :func:`run_status`): not a result to compare with a paper."""
    return ", smoke" in run.status or ", short" in run.status


def label_runs(runs: list[Run]) -> list[Run]:
    """Give each run the label tables and legends show among ``runs``: its run label, plus the
    dataset when the runs mix datasets, plus its folder (parent/name) when labels still collide;
    and its folder name, parent/name where two runs share a name (two sweeps' ``resnet-s0``)."""
    mixed = len({r.dataset for r in runs}) > 1
    labels = [f"{run_label(r.config)} [{r.dataset}]" if mixed else run_label(r.config) for r in runs]
    for r, label in zip(runs, labels):
        r.display = f"{label} ({r.path.parent.name}/{r.name})" if labels.count(label) > 1 else label
    names = [r.name for r in runs]
    for r in runs:
        r.folder = f"{r.path.parent.name}/{r.name}" if names.count(r.name) > 1 else r.name
    return runs
