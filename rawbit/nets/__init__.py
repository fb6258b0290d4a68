"""Networks: RBN and its configurations, the registry that names them, and their weight files."""

from .rbn import RBN, RBNConfig, RBNOutput
from .registry import (
    DEFAULT_MODEL,
    create_model,
    list_models,
    list_presets,
    load_model,
)

__all__ = [
    "RBN", "RBNConfig", "RBNOutput", "DEFAULT_MODEL",
    "create_model", "list_models", "list_presets", "load_model",
]  # fmt: skip
