"""Data for training: the distorted-MNIST splits, a fixed validation partition, a seeded shuffle, and the
registration datasets' pairs."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..data import dataset_info, load_digits, open_dataset, open_pairs
from ..data.folder import VAL_SEED_OFFSET  # validation draws never share the test's distortions
from .config import TrainConfig
from .evaluate import load_test_set
from .losses import epoch_seed

# The seed of the permutation that picks which training digits become validation digits
# (split_train_val): the first ``val_size`` of the permutation. Not the same idea as
# stnkit.data.mnist.SPLIT_SEED (which bundled digits are test digits), though the same number;
# any change here changes every run's training and validation digits.
VAL_SPLIT_SEED = 20_150_605


def check_split_sizes(config: TrainConfig) -> None:
    """Refuse a ``val_size`` or ``train_size`` that the training digits cannot give (before any output)."""
    n = len(load_digits("train", config.data_dir)[1])
    if not 0 <= config.val_size < n:
        raise ValueError(f"val_size must be in [0, {n}) (the training digits), got {config.val_size}")
    left = n - config.val_size
    if config.train_size is not None and config.train_size > left:
        raise ValueError(
            f"train_size must be at most {left} (the training digits left after val_size {config.val_size}), "
            f"got {config.train_size}"
        )


def split_train_val(n: int, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed partition of ``n`` training digits into (train, validation) indices (:data:`VAL_SPLIT_SEED`)."""
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}), got {val_size}")
    perm = np.random.default_rng(VAL_SPLIT_SEED).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


class SeededShuffle(Sampler[int]):
    """A random order of ``range(n)`` fixed by ``seed``: every pass over it gives the same order.

    (``RandomSampler`` with a generator draws a new order at each pass, so one extra pass,
    as Lightning makes when it restarts an epoch, would change the order.) The first pass
    is ``RandomSampler``'s with a generator seeded by ``seed``.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed)).tolist())


class DataModule(pl.LightningDataModule):
    """Any map-style datasets of ``(image, label)``: ``train`` (shuffled in an order fixed by
    ``(seed, epoch)``; its ``set_epoch(epoch)``, when it has one, is called before each epoch,
    so a dataset that draws its augmentations from ``(seed, epoch)`` resumes exactly), and
    optional ``val`` and ``test`` (in order)."""

    def __init__(self, config: TrainConfig, train=None, val=None, test=None):
        super().__init__()
        self.config = config
        self.train_set, self.val_set, self.test_set = train, val, test
        self._told: int | None = None  # the epoch the training set was last told

    def _loader(self, dataset, shuffle_seed: int | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            sampler=None if shuffle_seed is None else SeededShuffle(len(dataset), shuffle_seed),
            num_workers=self.config.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        # called again every epoch (reload_dataloaders_every_n_epochs=1): a new draw of the
        # augmentations and a new order, both functions of (seed, epoch)
        # the epoch about to be trained (on a resume Lightning may fetch once more before it has restored
        # its counters, with the epoch it left; the fetch that feeds the training has the right one)
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        if hasattr(self.train_set, "set_epoch") and epoch != self._told:  # Lightning may ask twice on a resume
            self.train_set.set_epoch(epoch)
            self._told = epoch
        return self._loader(self.train_set, shuffle_seed=epoch_seed(self.config.seed, epoch, "shuffle"))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set if self.val_set is not None else [])

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)


class DistortedMNISTDataModule(DataModule):
    """Train (distorted afresh every epoch), validation (carved from the training
    digits, fixed draw) and test (the test digits, fixed by ``test_seed``)."""

    def __init__(self, config: TrainConfig):
        super().__init__(config)

    def setup(self, stage: str | None = None) -> None:
        cfg = self.config
        if self.train_set is None:
            images, labels = load_digits("train", cfg.data_dir)
            train_idx, val_idx = split_train_val(len(labels), cfg.val_size)
            if cfg.train_size is not None:
                train_idx = train_idx[: cfg.train_size]
            self.train_set = open_dataset(cfg.dataset, images[train_idx], labels[train_idx], seed=cfg.seed, fresh=True)
            self.val_set = open_dataset(
                cfg.dataset, images[val_idx], labels[val_idx], seed=cfg.test_seed + VAL_SEED_OFFSET
            )
        if self.test_set is None and stage in (None, "test"):
            self.test_set = load_test_set(cfg, size=cfg.test_size)


class PairsDataModule(DataModule):
    """A registration dataset (``shapes2d``, ``shapes3d``): training pairs drawn afresh every epoch
    from ``(seed, epoch)`` (``train_size`` of them, default the dataset's), ``val_size`` validation
    pairs (fixed, from ``test_seed`` + 1,000) and the test pairs (:func:`~.evaluate.load_test_set`),
    each of side ``volume_size``."""

    def setup(self, stage: str | None = None) -> None:
        cfg = self.config
        info = dataset_info(cfg.dataset)
        if self.train_set is None:
            n = cfg.train_size if cfg.train_size is not None else info.sizes[0]
            self.train_set = open_pairs(cfg.dataset, n, seed=cfg.seed, fresh=True, size=cfg.volume_size)
            if cfg.val_size > 0:
                self.val_set = load_test_set(cfg, split="val")
        if self.test_set is None and stage in (None, "test"):
            self.test_set = load_test_set(cfg, size=cfg.test_size)
