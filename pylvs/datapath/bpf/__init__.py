"""The kernel fast path: C sources and their Python loader."""
