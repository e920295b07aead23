"""The config model, its loader and its store. Imports nothing from the engine or the TUI."""

from homeproxy.config.load import ConfigError, ConfigInvalid, build_config, parse_config
from homeproxy.config.model import Config, LoggingSettings, Route, ServerSettings, Site
from homeproxy.config.store import ConfigChanged, ConfigEvent, ConfigRejected, ConfigStore

__all__ = [
    "Config",
    "ConfigChanged",
    "ConfigError",
    "ConfigEvent",
    "ConfigInvalid",
    "ConfigRejected",
    "ConfigStore",
    "LoggingSettings",
    "Route",
    "ServerSettings",
    "Site",
    "build_config",
    "parse_config",
]
