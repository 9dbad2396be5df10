"""Data handling: fingerprint, preprocessing, caching, patch sampling, augmentation, phantoms."""
