"""Strategies, torch-free half: each strategy's spec, defaults and validation."""
