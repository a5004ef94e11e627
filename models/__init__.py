"""The train/serve contract: torch-free code both training/ and service/ import."""
