"""homeproxy: a reverse proxy for the home lab that you manage from a terminal."""

__version__ = "0.1.0"
