"""LightningDataModules and datasets (see each module's docstring for its batch keys)."""

from recur_attn.data.longlag import AddingDataModule as AddingDataModule
from recur_attn.data.longlag import CopyDataModule as CopyDataModule
from recur_attn.data.longlag import ParityDataModule as ParityDataModule
from recur_attn.data.longlag import TemporalOrderDataModule as TemporalOrderDataModule
from recur_attn.data.dates import DatesDataModule as DatesDataModule  # noqa: E402
from recur_attn.data.translation import BibleDataModule as BibleDataModule  # noqa: E402
from recur_attn.data.translation import TSVPairsDataModule as TSVPairsDataModule  # noqa: E402
from recur_attn.data.music import JSBChoralesDataModule as JSBChoralesDataModule  # noqa: E402
from recur_attn.data.music import Music21ChoralesDataModule as Music21ChoralesDataModule  # noqa: E402
from recur_attn.data.text import CharTextDataModule as CharTextDataModule  # noqa: E402
from recur_attn.data.text import ShakespeareDataModule as ShakespeareDataModule  # noqa: E402
from recur_attn.data.digits import DigitsDataModule as DigitsDataModule  # noqa: E402
from recur_attn.data.fashion_mnist import FashionMNISTDataModule as FashionMNISTDataModule  # noqa: E402
from recur_attn.data.addition import AdditionDataModule as AdditionDataModule  # noqa: E402
