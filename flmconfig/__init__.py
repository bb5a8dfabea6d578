"""Typed configuration: YAML files into dataclasses, with dotted overrides and clear errors."""

from flm.config.errors import FlmError
from flm.config.loader import ConfigError, config_to_dict, find_config, load_config, parse_overrides
from flm.config.progress import Progress

__all__ = ["ConfigError", "FlmError", "Progress", "config_to_dict", "find_config", "load_config", "parse_overrides"]
