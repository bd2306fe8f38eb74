"""The training loop every model family shares: epochs, early stopping and best-state restore.

A family supplies what one epoch does (:data:`EpochFn`: optimiser steps, returning the mean
training loss) and how the validation loss is measured (:data:`ValidateFn`);
:class:`TrainingLoop` seeds Python, NumPy and torch, runs epochs on a chosen number of torch
threads, keeps the weights of the epoch with the lowest validation loss, stops when that loss
has not improved for ``patience`` epochs and restores the best weights.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

#: One epoch: ``(epoch, rng, advance) -> mean training loss``; ``epoch`` counts from 1,
#: ``rng`` is the loop's seeded generator and ``advance()`` moves the progress bar one step.
EpochFn = Callable[[int, np.random.Generator, Callable[[], None]], float]
#: Validation: ``() -> (loss, figures)``; the lowest loss wins, figures go to the history.
ValidateFn = Callable[[], tuple[float, dict[str, float]]]


def set_seed(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; returns a NumPy generator for the caller's own draws."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def set_threads(n: int | None) -> None:
    """Make torch use ``n`` intra-op threads from now on (None: leave torch's choice).

    Raises
    ------
    ValueError
        If ``n`` is less than 1.
    """
    if n is not None:
        if n < 1:
            raise ValueError(f"--threads must be at least 1, got {n}.")
        torch.set_num_threads(n)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` intra-op threads inside the block, restoring the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class LoopResult:
    """What :meth:`TrainingLoop.run` did.

    Attributes
    ----------
    best_epoch : int
        Epoch whose weights were kept (0: the weights before training).
    epochs_run : int
        Epochs trained before stopping.
    best_loss : float
        Validation loss at the best epoch.
    best_figures : dict of str to float
        The validation figures at the best epoch.
    history : list of dict
        Per validation: ``epoch``, ``train_loss``, ``val_loss`` and the validation figures.
    """

    best_epoch: int
    epochs_run: int
    best_loss: float
    best_figures: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


class TrainingLoop:
    """Epochs with early stopping on a validation loss; constructing it seeds everything.

    Parameters
    ----------
    max_epochs : int
        Upper bound on epochs.
    patience : int
        Stop after this many epochs without a lower validation loss.
    seed : int
        Seed of Python, NumPy and torch (set here, so that models built after the loop is
        made are initialised reproducibly) and of :attr:`rng`.
    n_threads : int | None
        Torch intra-op threads while training (None: leave the setting).
    progress : bool
        Show a progress bar.
    desc : str
        Label of the progress bar.
    """

    def __init__(
        self,
        *,
        max_epochs: int,
        patience: int,
        seed: int,
        n_threads: int | None = None,
        progress: bool = False,
        desc: str = "training",
    ) -> None:
        if max_epochs < 1 or patience < 1:
            raise ValueError(f"max_epochs and patience must be >= 1, got {max_epochs}, {patience}.")
        self.max_epochs, self.patience = max_epochs, patience
        self.n_threads, self.progress, self.desc = n_threads, progress, desc
        self.rng = set_seed(seed)

    def run(
        self,
        module: torch.nn.Module,
        run_epoch: EpochFn,
        validate: ValidateFn,
        *,
        steps_per_epoch: int = 1,
        validate_first: bool = False,
    ) -> LoopResult:
        """Train ``module`` until the validation loss stops improving; keep its best weights.

        Parameters
        ----------
        module : torch.nn.Module
            Every trained weight (a :class:`torch.nn.ModuleDict` for several networks); it
            is put in training mode before each epoch, in evaluation mode before each
            validation, and left in evaluation mode with the best weights.
        run_epoch : EpochFn
            Trains one epoch; returns its mean training loss.
        validate : ValidateFn
            Measures the validation loss (and figures recorded with it).
        steps_per_epoch : int
            Optimiser steps per epoch (the length of the progress bar only).
        validate_first : bool
            Validate the untrained weights as epoch 0 (history entry with a NaN training
            loss); otherwise the first epoch's weights are the first candidates.

        Returns
        -------
        result : LoopResult
            Best epoch, its loss and figures, and the history.
        """
        threads = torch_threads(self.n_threads) if self.n_threads is not None else nullcontext()
        with threads:
            return self._run(module, run_epoch, validate, steps_per_epoch, validate_first)

    def _validate(
        self, module: torch.nn.Module, validate: ValidateFn
    ) -> tuple[float, dict[str, float]]:
        module.eval()
        return validate()

    def _run(
        self,
        module: torch.nn.Module,
        run_epoch: EpochFn,
        validate: ValidateFn,
        steps_per_epoch: int,
        validate_first: bool,
    ) -> LoopResult:
        best_loss, best_figures = float("inf"), dict[str, float]()
        history: list[dict[str, float]] = []
        if validate_first:
            best_loss, best_figures = self._validate(module, validate)
            history.append({"epoch": 0, "train_loss": float("nan"), "val_loss": best_loss,
                            **best_figures})  # fmt: skip
        best_state, best_epoch = copy.deepcopy(module.state_dict()), 0
        bar = tqdm(
            total=self.max_epochs * steps_per_epoch,
            desc=self.desc,
            unit="step",
            disable=not self.progress,
        )
        epoch = 0
        try:
            for epoch in range(1, self.max_epochs + 1):
                module.train()
                train_loss = run_epoch(epoch, self.rng, lambda: bar.update(1))
                val_loss, figures = self._validate(module, validate)
                history.append(
                    {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, **figures}
                )
                bar.set_postfix(val_loss=f"{val_loss:.4f}")
                if val_loss < best_loss:
                    best_loss, best_figures, best_epoch = val_loss, figures, epoch
                    best_state = copy.deepcopy(module.state_dict())
                elif epoch - best_epoch >= self.patience:
                    logger.info("Early stop at epoch %d (best %d)", epoch, best_epoch)
                    break
        finally:
            bar.close()
        module.load_state_dict(best_state)
        module.eval()
        return LoopResult(best_epoch, epoch, float(best_loss), dict(best_figures), history)


@dataclass(frozen=True)
class TrainConfigBase:
    """Settings that the training configuration of every model family shares.

    Each family's configuration extends this class (or :class:`EpochTrainConfig`), keeping
    its own defaults and adding its own settings.

    Attributes
    ----------
    batch_size : int
        Training examples (windows, trials) per optimiser step.
    patience : int
        Stop after this many validations without a lower validation loss; the weights with
        the lowest one are kept.
    weight_decay : float
        Weight decay of the optimiser.
    seed : int
        Seed of initialisation, batch draws, dropout and the validation split.
    """

    batch_size: int = 32
    patience: int = 5
    weight_decay: float = 1e-4
    seed: int = 0


@dataclass(frozen=True)
class EpochTrainConfig(TrainConfigBase):
    """Shared settings of the families that train in passes (epochs) over their examples.

    Attributes
    ----------
    batch_size, patience, weight_decay, seed
        See :class:`TrainConfigBase`; an epoch is one validation.
    max_epochs : int
        Upper bound on passes over the training examples.
    max_steps_per_epoch : int | None
        Cap on optimiser steps per epoch.
    progress : bool
        Show a progress bar.
    """

    max_epochs: int = 30
    max_steps_per_epoch: int | None = None
    progress: bool = False

    def training_loop(self, desc: str = "training", n_threads: int | None = None) -> TrainingLoop:
        """The early-stopping loop these settings describe (constructing it seeds everything).

        Parameters
        ----------
        desc : str
            Label of the progress bar.
        n_threads : int | None
            Torch intra-op threads while training (None: leave the setting).

        Returns
        -------
        loop : TrainingLoop
            A loop with this configuration's epochs, patience, seed and progress bar.
        """
        return TrainingLoop(
            max_epochs=self.max_epochs,
            patience=self.patience,
            seed=self.seed,
            n_threads=n_threads,
            progress=self.progress,
            desc=desc,
        )

    def steps_per_epoch(self, n_examples: int) -> int:
        """Batches that cover ``n_examples`` once, capped at ``max_steps_per_epoch``."""
        n_steps = -(-n_examples // self.batch_size)
        if self.max_steps_per_epoch is not None:
            n_steps = min(n_steps, self.max_steps_per_epoch)
        return n_steps
