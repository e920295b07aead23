"""The TUI's own widgets (nouns: `RequestLog`, ...), one module each."""
