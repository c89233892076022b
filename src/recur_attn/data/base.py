"""What the data modules share."""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader


class SplitDataModule(pl.LightningDataModule):
    """A data module whose three loaders come from one ``_loader(split, shuffle)``.

    Only the training split is shuffled. ``split_names`` names the splits as the
    data source does (train, validation, test).
    """

    split_names: tuple[str, str, str] = ("train", "val", "test")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.split_names[0], shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split_names[1], shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.split_names[2], shuffle=False)
