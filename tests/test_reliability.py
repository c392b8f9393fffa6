"""Reliability: determinism, bit-exact resume after SIGKILL/SIGTERM, solver failures, bad input, DDP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from odenet.cli import train_main
from odenet.models import backbones as model_registry
from odenet.models.layers import paper_head, paper_stem
from odenet.models.ode import ODEBlock
from odenet.solve import SolverSettings
from odenet.run.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("time_", "images_per_s")


def args(data_root, out, name, *extra) -> list[str]:
    return ["--dataset", "fashion-mnist", "--data-dir", str(data_root), "--batch-size", "32", "--test-batch-size", "64",
            "--limit-test-batches", "1", "--out-dir", str(out), "--run-name", name, "--no-progress", *extra]


def measured(rows: list[dict]) -> list[dict]:
    """Rows without wall-clock quantities, which no two runs share."""
    return [{k: v for k, v in r.items() if not k.startswith(TIMING) and k != "rss_peak_mb"} for r in rows]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


ODE_RUN = ("--backbone", "odenet", "--tol", "1e-2", "--epochs", "3", "--limit-train-batches", "4",
           "--milestones", "2")  # the learning rate drops during the run: resume must restore the schedule


def test_same_seed_same_metrics_and_weights(tiny_fashion, tmp_path):
    out = tmp_path / "runs"
    assert train_main(args(tiny_fashion, out, "a", *ODE_RUN, "--epochs", "2")) == 0
    assert train_main(args(tiny_fashion, out, "b", *ODE_RUN, "--epochs", "2")) == 0
    a, b = (read_metrics(out / n / "metrics.jsonl") for n in ("a", "b"))
    assert len(a) == 10 and measured(a) == measured(b)
    assert same_weights(weights(out / "a"), weights(out / "b"))


def spawn(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_row(path: Path, condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and any(condition(r) for r in read_metrics(path)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    raise TimeoutError("no such row appeared")


@pytest.fixture
def reference_run(tiny_fashion, tmp_path):
    """An uninterrupted run, in a subprocess like the interrupted ones (same thread count)."""
    out = tmp_path / "ref"
    proc = spawn(args(tiny_fashion, out, "ref", *ODE_RUN), tmp_path)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    return out / "ref"


def test_sigkill_mid_epoch_then_resume_auto_is_bit_exact(tiny_fashion, tmp_path, reference_run):
    out = tmp_path / "runs"
    argv = args(tiny_fashion, out, "x", *ODE_RUN)
    proc = spawn(argv, tmp_path)
    wait_for_row(out / "x" / "metrics.jsonl", lambda r: r["split"] == "train" and r["step"] == 6, proc)
    proc.kill()  # SIGKILL in epoch 2: no handler runs
    proc.wait()
    resumed = spawn([*argv, "--resume", "auto"], tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert "resumed from" in resumed.stdout.read()
    assert measured(read_metrics(out / "x" / "metrics.jsonl")) == measured(read_metrics(reference_run / "metrics.jsonl"))
    assert same_weights(weights(out / "x"), weights(reference_run))


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_finishes_the_step_checkpoints_and_resumes_exactly(tiny_fashion, tmp_path, reference_run, signum, code):
    out = tmp_path / "runs"
    argv = args(tiny_fashion, out, "x", *ODE_RUN)
    proc = spawn(argv, tmp_path)
    wait_for_row(out / "x" / "metrics.jsonl", lambda r: r["split"] == "train" and r["step"] == 6, proc)
    proc.send_signal(signum)
    assert proc.wait(timeout=120) == code
    err = proc.stderr.read().strip().splitlines()
    assert err[-1].startswith(f"interrupted by {signal.Signals(signum).name}") and "--resume" in err[-1]
    state = torch.load(out / "x" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["batches_done"] >= 2  # a mid-epoch checkpoint
    resumed = spawn([*argv, "--resume", str(out / "x" / "last.pt")], tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert measured(read_metrics(out / "x" / "metrics.jsonl")) == measured(read_metrics(reference_run / "metrics.jsonl"))
    assert same_weights(weights(out / "x"), weights(reference_run))


def test_checkpoint_every_n_steps(tiny_fashion, tmp_path):
    out = tmp_path / "runs"
    assert train_main(args(tiny_fashion, out, "x", "--backbone", "mlp", "--epochs", "1", "--limit-train-batches", "5",
                           "--checkpoint-every", "2")) == 0
    assert torch.load(out / "x" / "last.pt", weights_only=True)["step"] == 5


# ---------------------------------------------------------------------------------------- solver failures

class ExplodingField(nn.Module):
    """dx/dt = x²·k: finite-time blow-up, so adaptive solvers shrink dt until it underflows."""

    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(500.0))

    def forward(self, t, x):
        return self.k * x * x


class NaNHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


@pytest.fixture
def extra_backbones(monkeypatch):
    entries = dict(model_registry.BACKBONES._items)

    def exploding(*, in_channels, num_classes, solver=None, image_size=28):
        return model_registry.Classifier(paper_stem(in_channels), ODEBlock(ExplodingField(), solver or SolverSettings()),
                                         paper_head(64, num_classes))

    def nan_net(*, in_channels, num_classes, image_size=28):
        return model_registry.Classifier(nn.Identity(), nn.Identity(), NaNHead())

    entries["exploding"] = model_registry.BackboneEntry(exploding, True, "mnist")
    entries["nan-net"] = model_registry.BackboneEntry(nan_net, False, "mnist")
    monkeypatch.setattr(model_registry.BACKBONES, "_items", entries)


@pytest.mark.parametrize("extra, message", [
    (("--backbone", "exploding"), "underflow in dt"),
    (("--backbone", "odenet", "--max-num-steps", "1"), "max_num_steps exceeded"),
    (("--backbone", "nan-net"), "the loss was not finite (the loss is nan)"),
])
def test_failures_stop_with_one_sentence_and_exit_3(tiny_fashion, tmp_path, capsys, extra_backbones, extra, message):
    out = tmp_path / "runs"
    assert train_main(args(tiny_fashion, out, "x", "--epochs", "1", "--limit-train-batches", "2", *extra)) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "at epoch 1, step 1" in err
    if "forward solve" in err:
        assert "in the forward solve (dopri5, rtol 0.001, atol 0.001" in err
    assert "no checkpoint was written yet" in err and "--on-solver-failure skip-batch" in err


def test_failure_keeps_the_last_good_checkpoint(tiny_fashion, tmp_path, capsys):
    out = tmp_path / "runs"
    base = args(tiny_fashion, out, "x", "--backbone", "odenet", "--limit-train-batches", "2")
    assert train_main([*base, "--epochs", "1"]) == 0
    before = (out / "x" / "last.pt").read_bytes(), (out / "x" / "metrics.jsonl").read_text()
    code = train_main([*base, "--epochs", "2", "--max-num-steps", "1", "--force", "--resume",
                       str(out / "x" / "last.pt")])
    assert code == 3
    err = capsys.readouterr().err
    assert f"the last good checkpoint is {out / 'x' / 'last.pt'}" in err and "a larger --max-num-steps" in err
    assert (out / "x" / "last.pt").read_bytes() == before[0]
    assert (out / "x" / "metrics.jsonl").read_text() == before[1]


class FlakyField(nn.Module):
    """A field whose training solves fail on every other batch (non-finite state)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(-1.0))
        self.batch = 0

    def forward(self, t, x):
        bad = self.training and self.batch % 2 == 1
        return self.w * x * (float("inf") if bad else 1.0)


def register_flaky(monkeypatch, name: str, batchnorm: bool = False) -> None:
    """A backbone whose field blows up on every other training batch (optionally with a BatchNorm stem)."""
    entries = dict(model_registry.BACKBONES._items)

    def flaky(*, in_channels, num_classes, solver=None, image_size=28):
        field = FlakyField()
        stem = paper_stem(in_channels)
        if batchnorm:
            stem = nn.Sequential(nn.BatchNorm2d(in_channels), stem)
        model = model_registry.Classifier(stem, ODEBlock(field, solver or SolverSettings()),
                                          paper_head(64, num_classes))
        model.register_forward_pre_hook(lambda m, a: setattr(field, "batch", field.batch + m.training))
        return model

    entries[name] = model_registry.BackboneEntry(flaky, True, "mnist")
    monkeypatch.setattr(model_registry.BACKBONES, "_items", entries)


def test_skip_batch_skips_counts_and_logs(tiny_fashion, tmp_path, monkeypatch):
    register_flaky(monkeypatch, "flaky")
    out = tmp_path / "runs"
    assert train_main(args(tiny_fashion, out, "x", "--backbone", "flaky", "--epochs", "1", "--limit-train-batches", "6",
                           "--on-solver-failure", "skip-batch")) == 0
    rows = read_metrics(out / "x" / "metrics.jsonl")
    skipped = [r for r in rows if r["split"] == "skipped"]
    assert [r["batch"] for r in skipped] == [0, 2, 4] and all("in the forward solve" in r["reason"] for r in skipped)
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3]
    import json
    assert json.loads((out / "x" / "summary.json").read_text())["skipped_batches"] == 3


# ---------------------------------------------------------------------------------------- bad input

@pytest.fixture
def finished_run(tiny_fashion, tmp_path):
    out = tmp_path / "runs"
    assert train_main(args(tiny_fashion, out, "x", "--backbone", "mlp", "--epochs", "1", "--limit-train-batches",
                           "2")) == 0
    return out / "x"


def resume_args(tiny_fashion, run_dir: Path, ckpt: Path, *extra) -> list[str]:
    return args(tiny_fashion, run_dir.parent, run_dir.name, "--backbone", "mlp", "--epochs", "2",
                "--limit-train-batches", "2", "--resume", str(ckpt), *extra)


def corrupt(kind: str, run_dir: Path, tmp_path: Path) -> Path:
    if kind == "missing":
        return run_dir / "nope.pt"
    path = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        path.write_bytes((run_dir / "last.pt").read_bytes()[:3000])
    elif kind == "not-a-checkpoint":
        path.write_text("hello")
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    return path


@pytest.mark.parametrize("kind, message", [
    ("missing", "does not exist"),
    ("truncated", "is truncated or corrupt"),
    ("not-a-checkpoint", "is not a checkpoint"),
    ("foreign", "is not an odenet checkpoint"),
])
def test_bad_checkpoints_exit_2_and_lose_nothing(tiny_fashion, finished_run, tmp_path, capsys, kind, message):
    before = {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file()}
    assert train_main(resume_args(tiny_fashion, finished_run, corrupt(kind, finished_run, tmp_path))) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("extra, message", [
    (("--backbone", "resnet"), "is from a mlp run, not resnet; resume with --backbone mlp"),
    (("--dataset", "mnist"), "is from a fashion-mnist run, not mnist"),
    (("--lr", "0.5"), "refusing to resume"),
])
def test_resume_with_other_settings_is_refused(tiny_fashion, finished_run, capsys, extra, message):
    before = (finished_run / "metrics.jsonl").read_text()
    assert train_main([*resume_args(tiny_fashion, finished_run, finished_run / "last.pt"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert (finished_run / "metrics.jsonl").read_text() == before


def test_force_resumes_with_new_settings(tiny_fashion, finished_run):
    argv = resume_args(tiny_fashion, finished_run, finished_run / "last.pt", "--lr", "0.5", "--force")
    assert train_main(argv) == 0
    assert [r["lr"] for r in read_metrics(finished_run / "metrics.jsonl") if r["split"] == "train"] == \
        [0.1, 0.1, 0.5, 0.5]


def test_malicious_checkpoint_for_resume_is_refused(tiny_fashion, tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "odenet-checkpoint", "config": Evil()}, path)
    assert train_main(args(tiny_fashion, tmp_path, "x", "--backbone", "mlp", "--resume", str(path))) == 2
    assert "safe loading refuses" in capsys.readouterr().err and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("case", ["corrupt-data", "missing-data-dir", "unwritable-out"])
def test_data_and_output_problems_exit_2(tiny_fashion, tmp_path, capsys, case):
    out, data = tmp_path / "runs", tiny_fashion
    if case == "corrupt-data":
        path = tiny_fashion / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte.gz"
        path.write_bytes(path.read_bytes()[:30])
    elif case == "missing-data-dir":
        data = tmp_path / "nowhere"
    else:
        (tmp_path / "a-file").write_text("x")
        out = tmp_path / "a-file" / "runs"
    argv = args(data, out, "x", "--backbone", "mlp")
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert {"corrupt-data": "damaged or truncated gzip", "missing-data-dir": "is not a directory",
            "unwritable-out": "is not writable"}[case] in err
    assert not (tmp_path / "runs").exists()


def test_resume_auto_needs_a_run_name(tiny_fashion, tmp_path, capsys):
    argv = ["--dataset", "fashion-mnist", "--data-dir", str(tiny_fashion), "--out-dir", str(tmp_path / "r"),
            "--resume", "auto"]
    assert train_main(argv) == 2 and "--resume auto needs --run-name" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- DDP

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(argv: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
           f"--master-port={free_port()}", str(ROOT / "train.py"), *argv]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


DDP_RUN = ("--backbone", "odenet", "--solver", "rk4", "--steps", "2", "--epochs", "1", "--limit-train-batches", "3",
           "--data-on-device", "--device", "cpu")


def test_two_process_gloo_run_matches_one_process_on_the_same_global_batch(tiny_fashion, tmp_path):
    out = tmp_path / "runs"
    single = args(tiny_fashion, out, "single", *DDP_RUN)
    single[single.index("--batch-size") + 1] = "64"  # global batch of the 2 x 32 run
    assert train_main(single) == 0
    result = torchrun(args(tiny_fashion, out, "ddp", *DDP_RUN), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["ddp", "single"]  # rank 1 wrote nothing of its own
    ddp, one = (read_metrics(out / n / "metrics.jsonl") for n in ("ddp", "single"))
    ddp_train, one_train = ([r for r in rows if r["split"] == "train"] for rows in (ddp, one))
    assert len(ddp_train) == len(one_train) == 3
    for a, b in zip(ddp_train, one_train):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["nfe_forward/rank0"] == a["nfe_forward/rank1"] == a["nfe_forward_max"] == 8
    assert ddp[-1]["acc"] == pytest.approx(one[-1]["acc"], abs=1e-9)  # all 64 test images, split over 2 ranks


def test_ddp_logs_per_rank_nfe_and_resumes(tiny_fashion, tmp_path):
    out = tmp_path / "runs"
    argv = args(tiny_fashion, out, "x", "--backbone", "odenet", "--tol", "1e-2", "--epochs", "1",
                "--limit-train-batches", "2", "--device", "cpu")
    first = torchrun(argv, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = torchrun([*argv[:argv.index("--epochs")], "--epochs", "2", *argv[argv.index("--epochs") + 2:],
                        "--resume", str(out / "x" / "last.pt")], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = [r for r in read_metrics(out / "x" / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        per_rank = [r["nfe_forward/rank0"], r["nfe_forward/rank1"]]
        assert r["nfe_forward"] == pytest.approx(sum(per_rank) / 2) and r["nfe_forward_max"] == max(per_rank)


def test_rank_rows_combine_into_global_extremes(monkeypatch):
    from odenet.train import distributed

    def gather(rows, row):  # what all_gather_object fills in on a 2-rank job
        rows[:] = ranks

    monkeypatch.setattr(distributed.dist, "all_gather_object", gather)
    ctx = distributed.Context(rank=0, world_size=2)
    # evaluation rows: rank 0's batches took 20 and 44 NFE, rank 1's 26 and 26
    ranks = [{"acc": 0.5, "nfe_forward": 32.0, "nfe_forward_min": 20, "nfe_forward_max": 44, "time_ms": 3.0,
              "images_per_s": 100.0, "nfe_forward/b0": 12.0, "nfe_forward/b1": 20.0},
             {"acc": 0.7, "nfe_forward": 26.0, "nfe_forward_min": 26, "nfe_forward_max": 26, "time_ms": 5.0,
              "images_per_s": 80.0, "nfe_forward/b0": 10.0, "nfe_forward/b1": 16.0}]
    out = distributed.combine_rows(ctx, ranks[0])
    assert (out["nfe_forward"], out["nfe_forward_min"], out["nfe_forward_max"]) == (29.0, 20, 44)
    assert (out["nfe_forward/rank0"], out["nfe_forward/rank1"]) == (32.0, 26.0)
    assert (out["nfe_forward/b0"], out["nfe_forward/b1"]) == (11.0, 18.0)
    assert (out["time_ms"], out["images_per_s"], out["acc"]) == (5.0, 180.0, pytest.approx(0.6))
    # training rows: one shard of the global batch per rank
    ranks = [{"nfe_forward": 20.0, "nfe_backward": 26.0}, {"nfe_forward": 32.0, "nfe_backward": 20.0}]
    out = distributed.combine_rows(ctx, ranks[0])
    assert (out["nfe_forward"], out["nfe_forward_min"], out["nfe_forward_max"]) == (26.0, 20.0, 32.0)
    assert (out["nfe_backward_min"], out["nfe_backward_max"]) == (20.0, 26.0)


def test_resuming_a_finished_run_changes_nothing(tiny_fashion, finished_run, capsys):
    files = lambda: {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file()}  # noqa: E731
    before = files()
    assert train_main(resume_args(tiny_fashion, finished_run, finished_run / "last.pt", "--epochs", "1")) == 0
    assert "already trained its 1 epochs; nothing to do" in capsys.readouterr().out
    assert files() == before
    # a run killed after its last checkpoint but before its summary gets the summary it lacked
    summary = json.loads((finished_run / "summary.json").read_text())
    (finished_run / "summary.json").unlink()
    assert train_main(resume_args(tiny_fashion, finished_run, finished_run / "last.pt", "--epochs", "1")) == 0
    rebuilt = json.loads((finished_run / "summary.json").read_text())
    assert rebuilt["test"] == summary["test"] and rebuilt["train_last_epoch"] == summary["train_last_epoch"]
    assert train_main(resume_args(tiny_fashion, finished_run, finished_run / "last.pt", "--epochs", "2")) == 0
    before = files()
    assert train_main(resume_args(tiny_fashion, finished_run, finished_run / "last.pt", "--epochs", "1")) == 2
    assert "has already trained 2 epochs, more than --epochs 1; pass --epochs 3 or more" in capsys.readouterr().err
    assert files() == before


def test_a_batch_larger_than_the_training_set_is_refused(tiny_fashion, tmp_path, capsys):
    argv = args(tiny_fashion, tmp_path / "runs", "x", "--backbone", "mlp", "--epochs", "1")
    assert train_main([*argv, "--batch-size", "512"]) == 2
    err = capsys.readouterr().err
    assert "--batch-size 512 is larger than the 256 training images" in err and err.count("\n") == 1


def test_resume_keeps_the_skip_rows_before_its_checkpoint(tmp_path):
    from odenet.run.metrics import truncate_metrics

    rows = [{"split": "train", "epoch": 1, "step": 1}, {"split": "skipped", "epoch": 1, "step": 1, "batch": 1},
            {"split": "test", "epoch": 1, "step": 1},
            {"split": "skipped", "epoch": 2, "step": 1, "batch": 0}, {"split": "train", "epoch": 2, "step": 2},
            {"split": "skipped", "epoch": 2, "step": 2, "batch": 2}, {"split": "train", "epoch": 2, "step": 3}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    truncate_metrics(path, step=2, epoch=1, batches_done=2)  # checkpoint after epoch 2's batches 0 and 1
    assert read_metrics(path) == rows[:5]


@pytest.mark.parametrize("case, message", [
    ("seed", "--seed must be between 0 and 2**32 - 1"),
    ("config-dir", "cannot be read"),
    ("config-binary", "is not text"),
    ("checkpoint-lacking", "lacks optimizer, scheduler, epoch, step, rng, config, metrics"),
])
def test_more_bad_input_is_one_sentence_and_exit_2(tiny_fashion, tmp_path, capsys, case, message):
    from odenet.run.checkpoint import FORMAT

    argv = args(tiny_fashion, tmp_path / "runs", "x", "--backbone", "mlp", "--epochs", "1")
    extra = {"seed": ["--seed", "-1"], "config-dir": ["--config", str(tmp_path)],
             "config-binary": ["--config", str(tmp_path / "c.yaml")],
             "checkpoint-lacking": ["--resume", str(tmp_path / "x.pt")]}[case]
    (tmp_path / "c.yaml").write_bytes(b"\xff\xfe\x00binary")
    torch.save({"format": FORMAT, "model": {}}, tmp_path / "x.pt")
    assert train_main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_skipped_batch_leaves_batchnorm_statistics_alone(tiny_fashion, tmp_path, monkeypatch):
    register_flaky(monkeypatch, "flaky-bn", batchnorm=True)
    out = tmp_path / "runs"
    assert train_main(args(tiny_fashion, out, "x", "--backbone", "flaky-bn", "--epochs", "1",
                           "--limit-train-batches", "6", "--on-solver-failure", "skip-batch")) == 0
    state = weights(out / "x")
    tracked = [v for k, v in state.items() if k.endswith("num_batches_tracked")]
    assert [int(t) for t in tracked] == [3]  # the 3 trained batches, not the 3 skipped ones
