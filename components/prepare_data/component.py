"""The `prepare_data` Kubeflow component (kfp 2 lightweight component, run from the project image)."""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Output

from convbench.components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare_data(data_source: str, models: List[str], preset: str, epochs: int, seeds: int, max_train_images: int,
                 max_test_images: int, global_batch_size: int, config_yaml: str, dataset: Output[Dataset]) -> str:
    """Validate and decode the images into the uint8 Dataset artifact (with the resolved config); returns the config JSON."""
    from convbench.orchestrate.kfp_steps import prepare_dataset as run

    return run(dataset.path, dataset.metadata, data_source, models, preset, epochs, seeds, max_train_images,
               max_test_images, global_batch_size, config_yaml)
