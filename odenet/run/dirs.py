"""Where a run lives: its directory name, the checks made before anything is written there, and its lock."""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from odenet.errors import ConfigError
from odenet.naming import solver_name_parts

LOCK_NAME = ".lock"


def default_run_name(config: Mapping[str, Any]) -> str:
    """backbone-dataset-solver-setting-backprop-s<seed>-<time> (without the solver parts for a ResNet)."""
    parts = [config["backbone"], config["dataset"], *solver_name_parts(config)]
    parts += [f"s{config['seed']}", datetime.now().strftime("%Y%m%d-%H%M%S")]
    return "-".join(parts)


def check_run_name(name: str | None) -> None:
    """A run name is one directory inside --out-dir: no separator, not absolute, not '.' or '..'."""
    if name is None:
        return
    if not name or name in (".", "..") or "/" in name or (os.altsep and os.altsep in name) or "\0" in name:
        raise ConfigError(f"--run-name {name!r} must be a single directory name inside --out-dir (no '/', not "
                          f"'.' or '..'); put the parent folder in --out-dir instead")


def resolve_run_dir(config: Mapping[str, Any]) -> tuple[Path, str | None]:
    """(run directory, checkpoint to resume from or None) from ``out_dir``, ``run_name`` and ``resume``.

    Refuses to overwrite a run. :func:`claim_run_dir` calls it with the directory locked, so that
    no other process starts a run there between the check and the first write.
    """
    run_dir, resume = run_dir_of(config), config.get("resume")
    if resume == "auto":
        last = run_dir / "last.pt"
        if last.is_file():
            return run_dir, str(last)
        if (run_dir / "metrics.jsonl").exists():
            raise ConfigError(f"{run_dir} holds a run without a checkpoint to resume (it stopped before its first "
                              f"one); choose another --run-name, or delete {run_dir}")
        check_writable(run_dir)
        return run_dir, None
    if resume:
        check_writable(run_dir)
        return run_dir, resume
    if (run_dir / "metrics.jsonl").exists():
        raise ConfigError(f"run directory {run_dir} already holds a run; choose another --run-name, or continue it "
                          f"with --resume {run_dir / 'last.pt'}")
    return run_dir, None


def claim_run_dir(config: Mapping[str, Any], lock: bool = True) -> tuple[Path, str | None, RunLock | None]:
    """Check that the run directory can be written, lock it (``lock``: the main process), then check what it holds.

    Returns (run directory, checkpoint to resume from or None, the held lock or None); on a
    refusal nothing is left behind.
    """
    run_dir = run_dir_of(config)
    check_writable(run_dir)
    held = RunLock(run_dir).acquire() if lock else None
    try:
        return (*resolve_run_dir(config), held)
    except BaseException:
        if held is not None:
            held.release()
        raise


def run_dir_of(config: Mapping[str, Any]) -> Path:
    """The run's directory: --resume's folder, or --out-dir / --run-name (default name if none)."""
    out_dir, run_name, resume = config["out_dir"], config.get("run_name"), config.get("resume")
    check_run_name(run_name)
    if resume == "auto":
        if not run_name:
            raise ConfigError("--resume auto needs --run-name to know which run to continue")
        return Path(out_dir) / run_name
    if resume:
        return Path(resume).resolve().parent
    return Path(out_dir) / (run_name or default_run_name(config))


def check_writable(run_dir: Path, flag: str = "--out-dir") -> None:
    """Fail before training (or a sweep, or a grid) if ``run_dir`` could not be written; nothing is left behind.

    ``os.access`` alone is not enough: root passes it on ``/proc`` and on read-only mounts'
    mode bits, so a temporary file is made (and removed) in the deepest folder that exists.
    ``flag`` is the option that chose the folder, named in the refusal.
    """
    existing = Path(run_dir)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fix = f"choose another {flag}" if existing != Path(run_dir) else "make it writable, or copy the run elsewhere"
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output directory {existing} is not writable; {fix}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".odenet-probe.", dir=existing)
    except OSError as exc:
        raise ConfigError(f"output directory {existing} is not writable ({exc.strerror or exc}); {fix}") from None
    os.close(fd)
    os.unlink(probe)
    for name in ("metrics.jsonl", "config.yaml"):
        if (Path(run_dir) / name).exists() and not os.access(Path(run_dir) / name, os.W_OK):
            raise ConfigError(f"{Path(run_dir) / name} is not writable; {fix}")


class RunLock:
    """An exclusive lock on a run directory, held for the run's life, so two runs cannot share one.

    ``fcntl.flock`` on ``<run_dir>/.lock`` (the standard library; the third-party ``filelock``
    uses the same call on Linux): the kernel drops the lock when its process ends in any way,
    ``kill -9`` included, so a crashed run never leaves a lock that blocks its ``--resume``.
    The file is removed on release, and the folders made only to hold it are removed too, so
    a refused run leaves nothing behind. Readers of run directories (``odenet-report``) look
    for ``metrics.jsonl`` and ignore the hidden file.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None
        self._made: list[Path] = []

    def acquire(self) -> "RunLock":
        """Take the lock, or raise ConfigError naming the process that holds it."""
        self._make_dirs()
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                self._remove_dirs()
                raise ConfigError(f"output directory {self.path.parent} is not writable ({exc.strerror}); choose "
                                  f"another --out-dir") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise ConfigError(f"run directory {self.path.parent} is in use by another training process"
                                  f"{f' (pid {holder})' if holder else ''}; wait for it to end, or choose another "
                                  f"--run-name") from None
            # The holder before us may have removed the file between our open and our lock: retry on a fresh one.
            if self.path.exists() and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def holder(run_dir: Path) -> str | None:
        """Whether a live process holds ``run_dir``'s lock: its pid (or "a process"), else None. Reads only: the
        lock is tried and, if free, let go at once; a lock file left by a crash holds no lock (the kernel
        dropped it), so a crashed run reads as free."""
        path = Path(run_dir) / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "a process"
        finally:
            os.close(fd)  # closing drops a lock this call took
        return None

    def moved(self, run_dir: Path) -> None:
        """The locked directory was moved (with the lock held) to ``run_dir``: release the lock file there."""
        self.path = Path(run_dir) / LOCK_NAME

    def release(self) -> None:
        """Drop the lock; remove its file and the folders made only for it (while still holding it)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        self._remove_dirs()
        os.close(self._fd)
        self._fd = None

    def _make_dirs(self) -> None:
        missing = []
        folder = self.path.parent
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                self._remove_dirs()
                raise ConfigError(f"output directory {folder} cannot be created ({exc.strerror}); choose another "
                                  f"--out-dir") from None
            self._made.append(folder)

    def _remove_dirs(self) -> None:
        for folder in reversed(self._made):
            try:
                folder.rmdir()  # only if empty: a run that wrote anything keeps its directory
            except OSError:
                break
        self._made = []

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
