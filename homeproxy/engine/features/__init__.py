"""Per-site features, one module each: `make_<x>(settings) -> Middleware` (see `engine/chain.py`)."""
