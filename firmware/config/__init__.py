"""Configuration store: typed, validated PBX configuration in TinyDB, written atomically."""
from .errors import ConfigFileError, ConfigLockTimeout, SchemaVersionError, ValidationError, ValidationErrors
from .model import Extension, Settings
from .store import ConfigStore

__all__ = ["ConfigStore", "Extension", "Settings", "ValidationError", "ValidationErrors",
           "ConfigFileError", "SchemaVersionError", "ConfigLockTimeout"]

import firmware.features  # noqa: E402,F401  (registers every feature's records and destination kinds)
