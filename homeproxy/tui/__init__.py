"""The Textual front end. Sees the engine only through `homeproxy.engine` and the config through `ConfigStore`."""
