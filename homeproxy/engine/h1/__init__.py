"""homeproxy's own HTTP/1.1 upstream client: a keep-alive pool over httptools (llhttp)."""
