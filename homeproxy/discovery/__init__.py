"""mDNS discovery and announcement (python-zeroconf). No Textual here.

`service`, `events` and `directory` are plain data and import no zeroconf, so
the config loader and the engine may use them; `browse`, `publish` and
`runner` hold the zeroconf side and are imported only where discovery runs.
"""
