"""L2 data: datasets and the decoded cache (datasets), augmentation (augment), corruptions."""
