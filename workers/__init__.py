"""Stage loop, stage handlers, Ray actor pools and model backends."""
