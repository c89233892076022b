"""LightningDataModules and datasets (see each module's docstring for its batch keys)."""

from recur_attn.data.addition import AdditionDataModule
from recur_attn.data.captions import KarpathyCaptionDataModule, ShapesCaptionDataModule
from recur_attn.data.dates import DatesDataModule
from recur_attn.data.digits import DigitsDataModule
from recur_attn.data.fashion_mnist import FashionMNISTDataModule
from recur_attn.data.longlag import (
           AddingDataModule,
           CopyDataModule,
           ParityDataModule,
           TemporalOrderDataModule,
)
from recur_attn.data.music import JSBChoralesDataModule, Music21ChoralesDataModule
from recur_attn.data.parity_counts import CountBalancedParityDataModule
from recur_attn.data.text import CharTextDataModule, ShakespeareDataModule
from recur_attn.data.translation import BibleDataModule, TSVPairsDataModule

__all__ = ["AddingDataModule", "AdditionDataModule", "BibleDataModule", "CharTextDataModule", "CopyDataModule",
           "CountBalancedParityDataModule", "DatesDataModule", "DigitsDataModule", "FashionMNISTDataModule",
           "JSBChoralesDataModule", "KarpathyCaptionDataModule", "Music21ChoralesDataModule", "ParityDataModule",
           "ShakespeareDataModule", "ShapesCaptionDataModule", "TSVPairsDataModule", "TemporalOrderDataModule"]
