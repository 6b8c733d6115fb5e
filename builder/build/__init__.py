"""Building: a project folder -> a store entry -> an image (dataset, model, runtime)."""
