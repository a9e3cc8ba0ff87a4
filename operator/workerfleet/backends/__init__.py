"""Queue depth sources, one module per backend behind the `DepthSource` protocol (see base)."""
