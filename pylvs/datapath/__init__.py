"""Data paths that execute the engine's FlowEntry recipes (the Python rings live in pylvs.io)."""
