"""feature_extract package."""
