"""Speed-ups a strategy may opt into: frozen features, the model pool, the derived-data cache, the collector."""
