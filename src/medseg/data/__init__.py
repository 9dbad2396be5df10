"""Data handling: preprocessing, caching, patch sampling, augmentation, phantoms."""
