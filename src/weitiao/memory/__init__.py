"""Memory: a model's shape from its config alone, and estimates of inference and training memory from it."""
