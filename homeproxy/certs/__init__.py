"""Certificates: homeproxy's local CA, your own certificate files, ACME, and the per-site TLS state."""
