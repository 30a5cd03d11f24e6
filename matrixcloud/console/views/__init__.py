"""Console views, one module per area."""
