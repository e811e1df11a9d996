"""The OpenAI-compatible wire shapes: request and response models of the API."""
