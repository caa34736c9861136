"""Training: targets, losses, augmentation and the loop."""
