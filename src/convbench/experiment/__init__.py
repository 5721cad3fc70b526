"""L5 experiment: a comparison of every model x seed (comparison), the ablation, run folders."""
