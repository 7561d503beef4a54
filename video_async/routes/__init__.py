"""The HTTP routes, one module per group, mirroring the original's routes/ folder."""
