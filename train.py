"""Train an image classifier (ODE-Net, ResNet, ...) and measure it. See README.md or ``python train.py --help``."""

from odenet.cli import train_main

if __name__ == "__main__":
    raise SystemExit(train_main())
