"""L6 orchestrate: Ray Train (ray_train), the kfp step bodies on local paths (kfp_steps), Kubernetes
manifest rendering and validation (k8s_render)."""
