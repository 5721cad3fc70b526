"""The `train_model` Kubeflow component (kfp 2 lightweight component, run from the project image)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from convbench.components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_model(dataset: Input[Dataset], model_name: str, workers: int, gpus_per_worker: int, ray_address: str,
                run_name: str, shared_dir: str, resume_dir: str, model: Output[Model], history: Output[Metrics]):
    """Train every seed of one architecture (plain loop, or Ray Train when asked); history as Metrics."""
    from convbench.orchestrate.kfp_steps import train_and_export

    train_and_export(dataset.path, model_name, model.path, history.path, history.log_metric,
                     workers=workers, gpus_per_worker=gpus_per_worker, ray_address=ray_address, run_name=run_name,
                     shared_dir=shared_dir, resume_dir=resume_dir)
