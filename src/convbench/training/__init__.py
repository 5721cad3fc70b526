"""L3 training: the loop, optimizer/schedule/precision/checkpoints (loop), scratch vs transfer recipes
(recipes), evaluation and test-time probes (evaluation), TensorBoard event files."""
