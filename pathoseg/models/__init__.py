"""The networks, their checkpoints, inference engines and post-processing."""
