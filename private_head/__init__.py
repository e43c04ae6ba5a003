"""private_head package."""
