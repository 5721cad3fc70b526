"""The Kubeflow pipeline `convbench-comparison`: prepare data, train and evaluate every model in parallel, report.

    prepare-data ──> ParallelFor(models): train-model ──> evaluate-model ──> render-report

Parameters: the data source and split, the models, preset, epochs and seeds, Ray (workers, GPUs
per worker, address, shared folder), a resume folder, the resources of each step (CPU, memory,
GPUs with their resource name, e.g. nvidia.com/gpu) and the report's language (`lang`: en or es). Training steps retry; every step is cached,
keyed on its inputs: the Dataset artifact, which holds the data and the resolved config. With
`resume_dir` (a folder on a PVC, or `<out>/.kfp/resume` under `pipeline local`) an interrupted
train-model step resumes from its epoch checkpoints when the run is started again.

    convbench pipeline compile --out convbench-comparison.yaml
    convbench pipeline local --data ../shared/datasets/cifar10-jpeg --models cnn_vgg,cnn_resnet \\
        --max-train-images 300 --max-test-images 100 --epochs 1 --out runs/pipeline-local
"""


from typing import List

from kfp import dsl
from kfp.dsl import Artifact

import convbench.components as steps

PIPELINE_NAME = "convbench-comparison"
DEFAULT_MODELS = ["cnn_vgg", "cnn_resnet", "efficientnet_lite0"]
TRAIN_RETRIES = 2


def build_pipeline(image: "str | None" = None, shared_pvc: str = "", shared_mount: str = "/data",
                   ray_token_secret: str = "", local: bool = False):
    """The pipeline function, with its components running from `image`.

    Args:
        image: container image of every step (default: k8s/IMAGE).
        shared_pvc: a PersistentVolumeClaim to mount into train-model at `shared_mount`, the storage
            it shares with the Ray cluster ("" = none; needed for the Ray cluster paths).
        shared_mount: where that PVC is mounted.
        ray_token_secret: a Secret whose `auth_token` key becomes RAY_AUTH_TOKEN in train-model (Ray
            token auth), "" = none.
        local: for kfp's local runner, which cannot resolve resources given as pipeline parameters
            inside a ParallelFor (and would ignore Kubernetes resources anyway): per-step CPU, memory
            and GPU settings are left out, and so are retries (locally a failure is a bug to see at
            once, not a preempted node). DAG, components and caching are the same.

    Returns:
        A kfp pipeline function.
    """
    prepare, train, evaluate, report = (steps.with_image(c, image) if image else c for c in steps.COMPONENTS)

    def _resources(task, cpu, memory):
        if not local:
            task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)
        # Caching is keyed on the task's inputs; the Dataset artifact carries data and config together.
        return task.set_caching_options(True)

    @dsl.pipeline(name=PIPELINE_NAME, description="Train and compare CNN architectures on CIFAR; one Markdown report.")
    def comparison(
        data_source: str = "/data/cifar10-jpeg",
        models: List[str] = DEFAULT_MODELS,
        preset: str = "quick",
        epochs: int = 0,
        seeds: int = 0,
        max_train_images: int = 0,
        max_test_images: int = 0,
        global_batch_size: int = 0,
        config_yaml: str = "",
        workers: int = 1,
        gpus_per_worker: int = 0,
        ray_address: str = "",
        shared_dir: str = "/data/pipeline",
        resume_dir: str = "",
        train_cpu: str = "4",
        train_memory: str = "8Gi",
        train_gpus: int = 0,
        accelerator_type: str = "nvidia.com/gpu",
        step_cpu: str = "1",
        step_memory: str = "4Gi",
        lang: str = "en",
    ) -> Artifact:
        data = prepare(data_source=data_source, models=models, preset=preset, epochs=epochs, seeds=seeds,
                       max_train_images=max_train_images, max_test_images=max_test_images,
                       global_batch_size=global_batch_size, config_yaml=config_yaml)
        _resources(data, step_cpu, step_memory).set_display_name("prepare-data")
        with dsl.ParallelFor(models, name="models") as model_name:
            trained = train(dataset=data.outputs["dataset"], model_name=model_name,
                            workers=workers, gpus_per_worker=gpus_per_worker, ray_address=ray_address,
                            run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, shared_dir=shared_dir, resume_dir=resume_dir)
            _resources(trained, train_cpu, train_memory).set_display_name("train-model")
            if not local:
                trained.set_accelerator_type(accelerator_type).set_accelerator_limit(train_gpus)
            if not local:
                trained.set_retry(num_retries=TRAIN_RETRIES, backoff_duration="60s", backoff_factor=2.0)
            if shared_pvc:
                from kfp import kubernetes

                kubernetes.mount_pvc(trained, pvc_name=shared_pvc, mount_path=shared_mount)
            if ray_token_secret:
                from kfp import kubernetes

                kubernetes.use_secret_as_env(trained, secret_name=ray_token_secret,
                                             secret_key_to_env={"auth_token": "RAY_AUTH_TOKEN"})
            scored = evaluate(dataset=data.outputs["dataset"], model=trained.outputs["model"])
            _resources(scored, step_cpu, step_memory).set_display_name("evaluate-model")
        # The language reaches the report step alone: the training steps' cache does not depend on it.
        done = report(dataset=data.outputs["dataset"], models=dsl.Collected(trained.outputs["model"]),
                      evaluations=dsl.Collected(scored.outputs["metrics"]), lang=lang)
        _resources(done, step_cpu, step_memory).set_display_name("render-report")
        return done.outputs["run_dir"]

    return comparison


comparison = build_pipeline()
