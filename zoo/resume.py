"""Interruption and exact resume: nothing lost when a run is stopped, nothing changed when it
continues.

* :class:`InterruptCheckpoint`: SIGTERM and SIGINT (and a SLURM requeue signal, through
  Lightning's ``SLURMEnvironment`` plugin) are noted when they arrive and acted on at the next
  step boundary: a checkpoint of that step, then exit ``128 + signal`` (143, 130). A second
  signal stops at once, without one.
* :class:`ExactResume`: the RNG states of torch (CPU and CUDA), numpy and Python travel in
  every checkpoint and are restored just before the first resumed step, so a resumed run draws
  what the straight run draws (the data order is :class:`zoo.data.sampling.ResumableLoader`'s).
* :class:`AtomicCheckpointIO`: checkpoints are written beside their target and renamed into
  place (:func:`zoo.io.atomic_path`), never half-written under the real name.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO

from zoo.io import atomic_write

__all__ = ["AtomicCheckpointIO", "ExactResume", "Interrupted", "InterruptCheckpoint"]

log = logging.getLogger(__name__)


class Interrupted(SystemExit):
    """Raised to end a run stopped by ``signum``; the process exits with ``128 + signum``."""

    def __init__(self, signum: int, checkpoint: Path | None = None) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.checkpoint = checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoints, written to a temporary file beside the target
    and renamed over it (Lightning's own writer stages the bytes in the system's temporary
    folder, which a kill leaves behind and a cross-device move copies non-atomically)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} takes no storage_options, got {storage_options!r}"
            )
        with atomic_write(path, "wb") as f:
            torch.save(checkpoint, f)


def _slurm(trainer: Trainer) -> SLURMEnvironment | None:
    environment = trainer._accelerator_connector.cluster_environment
    return (
        environment
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue
        else None
    )


class InterruptCheckpoint(Callback):
    """Save a checkpoint at the current step on SIGTERM / SIGINT / SLURM's requeue signal, then
    exit ``128 + signal``.

    The signal handler only notes the signal; the checkpoint is taken at the next step
    boundary (after the training batch, or after a validation that was running), so it holds a
    consistent state. Under SLURM with ``auto_requeue`` the requeue signal is handed to
    Lightning's own handler there (it saves ``hpc_ckpt_N.ckpt``, which a requeued job resumes
    from, and runs ``scontrol requeue``). Outside ``fit`` a signal ends the run at the next
    batch, with nothing to save.

    Args:
        dirpath: folder of the interrupt checkpoint (the run's ``checkpoints/``); None: the
            trainer's ``default_root_dir``.
        filename: its name without ``.ckpt``; ``last`` makes it the run's last checkpoint.
    """

    def __init__(self, dirpath: str | Path | None = None, filename: str = "last") -> None:
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.filename = filename
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self.saved: Path | None = None

    # -- signals ------------------------------------------------------------------------------
    def _signals(self, trainer: Trainer) -> list[int]:
        signals = [signal.SIGTERM, signal.SIGINT]
        slurm = _slurm(trainer)
        if slurm is not None and slurm.requeue_signal is not None:
            signals.append(int(slurm.requeue_signal))
        return signals

    def _install(self, trainer: Trainer) -> None:
        """Replace the handlers (Lightning registers its own just before the loop starts, so
        this runs in the ``on_*_start`` hooks); :meth:`_restore` puts them back."""
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        self.received = None
        for signum in self._signals(trainer):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._note)

    def _restore(self) -> None:
        """Put back the handlers this replaced, unless someone (Lightning's teardown) already
        put back theirs."""
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._note:
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # a second signal: stop now, without a checkpoint
            raise Interrupted(signum)
        self.received = signum
        name = signal.Signals(signum).name
        log.warning(
            "received %s: saving a checkpoint at the end of this step, then stopping "
            "(send it again to stop at once without one)",
            name,
        )

    def _stop_requested(self, trainer: Trainer) -> bool:
        local = self.received is not None
        if trainer.world_size > 1:  # every rank stops at the same step
            return bool(trainer.strategy.reduce_boolean_decision(local, all=False))
        return local

    # -- hooks --------------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install(trainer)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install(trainer)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install(trainer)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self._stop_requested(trainer):
            # Lightning logs the step's metrics after this hook; log them now, or the step's
            # row would be missing from the run's metrics (the resume starts at the next step)
            trainer._logger_connector.update_train_step_metrics()
            self._save_and_stop(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            trainer.state.fn == "fit"
            and not trainer.sanity_checking
            and self._stop_requested(trainer)
        ):
            self._save_and_stop(trainer)

    def on_validation_batch_end(self, trainer: Trainer, *args: Any) -> None:
        if trainer.state.fn != "fit" and self._stop_requested(trainer):
            raise Interrupted(self.received or signal.SIGTERM)

    on_test_batch_end = on_validation_batch_end
    on_predict_batch_end = on_validation_batch_end

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def _save_and_stop(self, trainer: Trainer) -> None:
        signum = self.received if self.received is not None else signal.SIGTERM
        slurm = _slurm(trainer)
        if slurm is not None and signum == slurm.requeue_signal:
            # Lightning's requeue handler, at a step boundary: hpc checkpoint + scontrol requeue
            trainer._signal_connector._slurm_sigusr_handler_fn(signum, None)
            raise Interrupted(signum)
        folder = self.dirpath or Path(trainer.default_root_dir)
        path = folder / f"{self.filename}.ckpt"
        trainer.save_checkpoint(path, weights_only=False)  # the full state, to resume
        self.saved = path
        log.warning(
            "interrupted by %s at step %d: saved %s; resume with --ckpt_path %s",
            signal.Signals(signum).name,
            trainer.global_step,
            path,
            path,
        )
        raise Interrupted(signum, path)


def _rng_states() -> dict[str, Any]:
    """The generators' states as tensors and plain values (``weights_only=True`` loads them)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, python_gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(gauss),
        ],
        "python": [version, torch.tensor(internal, dtype=torch.int64), python_gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, python_gauss = states["python"]
    random.setstate((version, tuple(internal.tolist()), python_gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ExactResume(Callback):
    """What Lightning does not restore for a bit-exact resume, restored when the resumed loop
    starts (after the model, the optimizer and the loaders were rebuilt, before the first batch
    is drawn):

    * the RNG states of torch, numpy and Python, kept in every checkpoint, so masking, dropout
      and sampling continue as in an uninterrupted run (rank 0's states: every rank starts
      from ``seed_everything``'s seed and draws alike);
    * the training loader's position. Lightning restores a stateful loader only when it builds
      the loaders after the checkpoint is read, but a schedule sized by
      ``trainer.estimated_stepping_batches`` builds them earlier, in ``configure_optimizers``;
      the loader state Lightning read is applied here instead.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "ExactResume"

    def state_dict(self) -> dict[str, Any]:
        return {"states": _rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("states")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loop = trainer.fit_loop
        if loop._combined_loader_states_to_load and loop.restarting:
            loop._load_combined_loader_states()
        if self._pending is not None:
            _set_rng_states(self._pending)
            self._pending = None
