"""Helpers for the entry points: config filling and checks, instantiation, printing."""

from recur_attn.utils.config import (
    check_consistent,
    check_no_missing,
    fill_from_data,
    missing_keys,
    validate_model_config,
)
from recur_attn.utils.instantiators import instantiate_callbacks, instantiate_loggers
from recur_attn.utils.logging_utils import log_hyperparameters
from recur_attn.utils.paths import config_dir
from recur_attn.utils.rich_utils import print_config_tree

__all__ = [
    "check_consistent",
    "check_no_missing",
    "config_dir",
    "fill_from_data",
    "instantiate_callbacks",
    "instantiate_loggers",
    "log_hyperparameters",
    "missing_keys",
    "print_config_tree",
    "validate_model_config",
]
