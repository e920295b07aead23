"""The TUI's screens: one module each (`XxxScreen`), dialogs as `XxxModal`."""
