"""pylvs: Linux Virtual Server re-built in Python."""

__version__ = "0.1.0"
