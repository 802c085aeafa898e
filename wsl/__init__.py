"""Weight-space learning: data module, augmentations and encoders over zoo weights."""
