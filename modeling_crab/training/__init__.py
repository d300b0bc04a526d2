"""Training: the Crab Trainer, manifests and audio loading, batching, metrics and the built-in demo."""
