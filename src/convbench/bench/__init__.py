"""L5 bench: throughput, MFU, time to accuracy (benchmark) and the PyTorch peer."""
