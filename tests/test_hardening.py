"""Issue 10's catalogue, kept as tests: each entry point's bad input is one sentence, exit 2, nothing written;
runs are locked, a second signal is clean, full disks and damaged files are explained, names are suggested."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from odenet.cli import dynamics_main, report_main, train_main
from odenet.solve import SOLVERS
from odenet.registry import NAMES, catalogue, closest

ROOT = Path(__file__).resolve().parents[1]


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*")) if Path(path).exists() else []


def assert_refused(code: int, err: str, message: str = "", exit_code: int = 2) -> None:
    assert code == exit_code, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err, err


def run_args(data_root, out, name, *extra) -> list[str]:
    return ["--dataset", "fashion-mnist", "--data-dir", str(data_root), "--batch-size", "32", "--test-batch-size",
            "64", "--limit-test-batches", "1", "--out-dir", str(out), "--run-name", name, "--no-progress", *extra]


MLP = ("--backbone", "mlp", "--epochs", "1", "--limit-train-batches", "2")


# ------------------------------------------------------------------------------------------- names

@pytest.mark.parametrize("name, choices, expected", [
    ("--tolerance", ["--tol", "--force", "--lr"], "--tol"),
    ("--lerning-rate", ["--lr", "--lr-gamma", "--momentum"], "--lr"),
    ("--batch_size", ["--batch-size", "--test-batch-size"], "--batch-size"),
    ("--check", ["--checkpoint-every", "--compile"], "--checkpoint-every"),
    ("--epoch", ["--epochs", "--seed"], "--epochs"),
    ("dopri", list(SOLVERS), "dopri5"),
    ("mnist5k", catalogue("dataset"), "mnist-5k"),
    ("fashion", catalogue("dataset"), "fashion-mnist"),
    ("odenet-18", catalogue("backbone"), "odenet18"),
    ("--zzz", ["--tol", "--lr"], None),
    ("", ["--tol"], None),
])
def test_closest_tries_case_prefix_abbreviation_then_difflib(name, choices, expected):
    assert closest(name, choices) == (f" (did you mean {expected!r}?)" if expected else "")


def test_the_name_catalogue_is_what_the_registries_hold():
    from odenet.data import datasets
    from odenet.models import backbones
    from odenet.registry import Registry
    from odenet.solve.torchdiffeq_api import missing_methods

    assert backbones.BACKBONES.names() == catalogue("backbone") == sorted(NAMES["backbone"])
    assert datasets.DATASETS.names() == catalogue("dataset")
    assert missing_methods(SOLVERS) == []  # the solver table names only methods torchdiffeq has
    with pytest.raises(ValueError, match="not in odenet.registry.NAMES"):
        Registry("backbone").register("not-catalogued")(object())


def test_help_needs_no_torch_shows_defaults_and_no_markup():
    code = ("import io, sys, contextlib\nfrom odenet.cli import train_main, report_main\nout = io.StringIO()\n"
            "for main in (train_main, report_main):\n    with contextlib.redirect_stdout(out):\n"
            "        try:\n            main(['--help'])\n        except SystemExit:\n            pass\n"
            "print(out.getvalue())\nprint('torch imported' if 'torch' in sys.modules else 'no torch')\n")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    elapsed = time.perf_counter() - started
    text = result.stdout
    assert result.stdout.strip().endswith("no torch"), text[-500:]
    assert "training epochs (default: 160)" in " ".join(text.split())
    assert "(default: 60,100,140)" in " ".join(text.split()) and "(default: dopri5)" in " ".join(text.split())
    assert "``" not in text and ":func:" not in text
    assert elapsed < 30  # import torch alone is ~2 s on a quiet machine; this is only a guard against torch


def test_dynamics_help_has_no_markup(capsys):
    for command in ("fit", "fit-all", "latent", "report"):
        assert dynamics_main([command, "--help"]) == 0
    assert "``" not in capsys.readouterr().out


def test_readme_run_name_format_matches_the_code():
    from odenet.run.dirs import default_run_name

    doc = default_run_name.__doc__.split(" ")[0]  # backbone-dataset-solver-setting-backprop-s<seed>-<time>
    assert doc in (ROOT / "README.md").read_text()


# ------------------------------------------------------------------------------- train.py catalogue

TRAIN_CATALOGUE = [
    (["--tolerance", "1e-3"], "did you mean '--tol'?"),
    (["--lerning-rate", "0.1"], "did you mean '--lr'?"),
    (["--solver", "dopri"], "did you mean 'dopri5'?"),
    (["--dataset", "mnist5k"], "did you mean 'mnist-5k'?"),
    (["--backbone", "odenet-18"], "did you mean 'odenet18'?"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--epochs", "many"], "--epochs expects an integer"),
    (["--tol", "nan"], "--tol must be a positive number"),
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--seed", "-1"], "--seed must be between"),
    (["--run-name", "../x"], "must be a single directory name"),
    (["--run-name", "/tmp/odenet-abs"], "must be a single directory name"),
    (["--run-name", "a/b"], "must be a single directory name"),
    (["--run-name", ".."], "must be a single directory name"),
    (["--out-dir", "/proc/odenet-test-runs"], "is not writable"),
    (["--resume", "auto"], "--resume auto needs --run-name"),
    (["--device", "tpu"], "unknown --device"),
]


@pytest.mark.parametrize("argv, message", TRAIN_CATALOGUE, ids=[" ".join(a) for a, _ in TRAIN_CATALOGUE])
def test_train_catalogue(tiny_fashion, tmp_path, capsys, argv, message):
    out = tmp_path / "runs"
    base = ["--dataset", "fashion-mnist", "--data-dir", str(tiny_fashion), "--backbone", "odenet", "--out-dir", str(out),
            "--no-progress"]
    if "--run-name" not in argv and "--resume" not in argv:
        base += ["--run-name", "x"]
    code = train_main([*base, *argv])
    assert_refused(code, capsys.readouterr().err, message)
    assert files_under(out) == [] and not Path("/tmp/odenet-abs").exists() and not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------- report / dynamics

def test_report_catalogue(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    for argv, message in [([], "the following arguments are required"), (["--nope", "x"], "unknown flag --nope"),
                          ([str(tmp_path / "missing")], "does not exist")]:
        assert_refused(report_main(argv), capsys.readouterr().err, message)
    assert files_under(tmp_path) == [tmp_path / "run"]


DYNAMICS_CATALOGUE = [
    (["fit", "--iters", "0"], "--iters must be at least 1"),
    (["fit", "--solver", "dopri"], "did you mean 'dopri5'?"),
    (["fit", "--irregular", "1.5"], "--irregular must be in [0, 1)"),
    (["fit", "--seed", "-1"], "--seed must be between"),
    (["fit", "--system-seed", "-1"], "--system-seed must be between"),
    (["fit", "--run-name", "../x"], "must be a single directory name"),
    (["fit", "--out-dir", "/proc/odenet-test-runs"], "is not writable"),
    (["fit", "--tolerance", "1"], "did you mean '--tol'?"),
    (["fit-all", "--systems", "spiral,nope"], "unknown system 'nope'"),
    (["fit-all", "--out-dir", "/proc/odenet-test-runs"], "is not writable"),
    (["latent", "--observations", "1000"], "cannot exceed --window"),
    (["latent", "--run-name", "/tmp/odenet-abs"], "must be a single directory name"),
    (["latent", "--out-dir", "/proc/odenet-test-runs"], "is not writable"),
    (["latent", "--seed", "-1"], "--seed must be between"),
    (["report"], "the following arguments are required"),
    (["report", "/nonexistent-run", "--out", "OUT/r"], "is not a finished fit"),
    (["frob"], "unknown command 'frob'"),
]


@pytest.mark.parametrize("argv, message", DYNAMICS_CATALOGUE, ids=[" ".join(a) for a, _ in DYNAMICS_CATALOGUE])
def test_dynamics_catalogue(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    argv = [a.replace("OUT", str(out)) for a in argv]
    if argv[0] in ("fit", "fit-all", "latent") and "--out-dir" not in argv:
        argv += ["--out-dir", str(out)]
    assert_refused(dynamics_main(argv), capsys.readouterr().err, message)
    assert files_under(out) == [] and not Path("/tmp/odenet-abs").exists() and not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------- data

def test_an_empty_idx_test_split_is_refused_before_anything_is_written(data_root, tmp_path, capsys):
    from conftest import make_mnist_folder

    make_mnist_folder(data_root / "FashionMNIST" / "raw", n_test=0)
    out = tmp_path / "runs"
    code = train_main(run_args(data_root, out, "x", *MLP))
    assert_refused(code, capsys.readouterr().err, "t10k-images-idx3-ubyte.gz holds no images")
    assert files_under(out) == []


@pytest.mark.parametrize("data", [["a"] * 3072, [[300] * 3072], [[-1] * 3072], [[0.5] * 3072], {"x": 1}])
def test_cifar_data_that_are_not_pixel_bytes_name_the_file(tmp_path, data):
    import pickle

    from odenet.data.formats import DataFileError, read_cifar_batch

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [0]}, protocol=2))
    with pytest.raises(DataFileError, match=f"{path} holds 'data'"):
        read_cifar_batch(path, "labels")


def test_missing_mnist_points_to_mnist_5k_and_the_debian_package(data_root, tmp_path, capsys):
    code = train_main(["--dataset", "mnist", "--data-dir", str(data_root), "--out-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert_refused(code, err, "--dataset mnist-5k")
    assert "dataset-fashion-mnist" in err


# ----------------------------------------------------------------------------- run directories

def spawn(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_runs_with_one_run_name_started_together_one_is_refused(tiny_fashion, tmp_path):
    out = tmp_path / "runs"
    base = run_args(tiny_fashion, out, "same", "--backbone", "odenet", "--tol", "1e-2", "--epochs", "2",
                    "--limit-train-batches", "4")
    procs = [spawn([*base, "--seed", str(seed)], tmp_path) for seed in (1, 2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    winner = 1 + [code for code, _ in results].index(0)
    loser_err = next(err for code, err in results if code == 2)
    assert "Traceback" not in loser_err and loser_err.count("\n") == 1, loser_err
    assert "in use by another training process" in loser_err or "already holds a run" in loser_err
    run = out / "same"
    config = (run / "config.yaml").read_text()
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert f"seed: {winner}" in config and summary["config"]["seed"] == winner
    assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 9))  # one run's steps, in order
    assert not (run / ".lock").exists()


def test_a_held_lock_refuses_a_run_and_touches_nothing(tiny_fashion, tmp_path, capsys):
    from odenet.run.dirs import RunLock

    out = tmp_path / "runs"
    assert train_main(run_args(tiny_fashion, out, "x", *MLP)) == 0
    before = {p: p.read_bytes() for p in files_under(out / "x") if p.is_file()}
    with RunLock(out / "x"):
        code = train_main(run_args(tiny_fashion, out, "x", *MLP, "--epochs", "2", "--resume", "auto"))
        assert_refused(code, capsys.readouterr().err, f"(pid {os.getpid()})")
    after = {p: p.read_bytes() for p in files_under(out / "x") if p.is_file()}
    assert after == before


def test_a_refused_lock_holder_leaves_no_directory(tmp_path):
    from odenet.run.dirs import RunLock

    lock = RunLock(tmp_path / "a" / "b").acquire()
    assert (tmp_path / "a" / "b" / ".lock").is_file()
    lock.release()
    assert files_under(tmp_path) == []


def test_a_second_signal_stops_at_once_with_one_sentence(tiny_fashion, tmp_path):
    out = tmp_path / "runs"
    proc = spawn(run_args(tiny_fashion, out, "x", "--backbone", "odenet", "--tol", "1e-4", "--epochs", "3",
                          "--checkpoint-every", "2"), tmp_path)
    metrics = out / "x" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and sum(1 for line in metrics.read_text().splitlines() if '"train"' in line) >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    err = proc.stderr.read()
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert "stopped at once by a second SIGINT" in err or "interrupted by SIGINT" in err
    from odenet.run.checkpoint import load_checkpoint

    assert load_checkpoint(out / "x" / "last.pt")["step"] >= 2  # whole: it loads


def test_resume_into_a_directory_that_cannot_be_written_is_refused(tiny_fashion, tmp_path, capsys, monkeypatch):
    import tempfile

    from odenet.run import dirs

    out = tmp_path / "runs"
    assert train_main(run_args(tiny_fashion, out, "x", *MLP)) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in files_under(out / "x") if p.is_file()}
    real = tempfile.mkstemp

    def read_only(*args, dir=None, **kw):  # noqa: A002 - tempfile's name
        if Path(dir) == out / "x":
            raise PermissionError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(dirs.tempfile, "mkstemp", read_only)
    code = train_main(run_args(tiny_fashion, out, "x", *MLP, "--epochs", "2", "--resume", str(out / "x" / "last.pt")))
    assert_refused(code, capsys.readouterr().err, "is not writable (Read-only file system)")
    assert {p: p.read_bytes() for p in files_under(out / "x") if p.is_file()} == before


def test_a_damaged_metrics_file_refuses_the_resume_before_any_write(tiny_fashion, tmp_path, capsys):
    out = tmp_path / "runs"
    assert train_main(run_args(tiny_fashion, out, "x", *MLP)) == 0
    capsys.readouterr()
    metrics = out / "x" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files_under(out / "x") if p.is_file()}
    code = train_main(run_args(tiny_fashion, out, "x", *MLP, "--epochs", "2", "--resume", "auto"))
    assert_refused(code, capsys.readouterr().err, "line 2 is not JSON")
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files_under(out / "x") if p.is_file()} == before


def test_a_full_disk_while_checkpointing_is_one_sentence_exit_3_and_keeps_the_checkpoint(tiny_fashion, tmp_path,
                                                                                          capsys, monkeypatch):
    from odenet.run import checkpoint

    out = tmp_path / "runs"
    assert train_main(run_args(tiny_fashion, out, "x", *MLP)) == 0
    capsys.readouterr()
    last = out / "x" / "last.pt"
    before = last.read_bytes()
    real = checkpoint.atomic_write_bytes

    def disk_full(path, write):
        def partial(fh):
            fh.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        real(path, partial)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", disk_full)
    code = train_main(run_args(tiny_fashion, out, "x", *MLP, "--epochs", "2", "--resume", str(last)))
    err = capsys.readouterr().err
    assert_refused(code, err, "the disk is full", exit_code=3)
    assert f"the last good checkpoint is {last}" in err and f"--resume {last}" in err
    assert last.read_bytes() == before
    assert [p.name for p in (out / "x").iterdir() if p.name.endswith(".tmp")] == []


def test_torch_save_on_a_full_disk_raises_the_oserror_and_leaves_the_old_file(tmp_path, monkeypatch):
    import torch

    from odenet.run import checkpoint, files

    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(path, {"a": torch.ones(3)})
    before = path.read_bytes()
    real = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh, self.written = fh, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 200:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: Full(real(fd, mode)))
    with pytest.raises(OSError) as caught:
        checkpoint.save_checkpoint(path, {"a": torch.zeros(10000)})
    assert caught.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_the_time_estimate_speaks_once_after_ten_cpu_steps_of_a_long_run():
    from odenet.train.trainer import TimeEstimate, eta_line

    assert eta_line(0.5, 2400, 160) == ("about 20 min for 160 epochs at 0.50 s per step on the CPU (training steps "
                                        "only; --device cuda, --limit-train-batches or fewer --epochs for less)")
    assert eta_line(0.5, 10, 1, min_s=60) is None
    estimate = TimeEstimate(cpu=True)
    said = [estimate.step(10 ** 6, 160)]  # the first step starts the clock (it carries one-time costs)
    estimate.started -= 90.0  # nine more steps that took 10 s each
    said += [estimate.step(10 ** 6, 160) for _ in range(11)]
    assert [s is not None for s in said] == [False] * 9 + [True, False, False]
    assert said[9].startswith("about 2777.8 h for 160 epochs at 10.00 s per step")
    assert all(TimeEstimate(cpu=False).step(10 ** 6, 1) is None for _ in range(12))
