"""What to evaluate: the model and dataset (local or from a registry), shards and their merge."""
