"""The pipeline's four Kubeflow components: typed wrappers, each calling one `convbench.pipeline_lib` function.

All four run from the one project image (`k8s/IMAGE`, e.g. convbench:0.1.0, overridable with
`with_image`), which already holds convbench, TensorFlow, Ray and kfp: no pip install at run time
(`install_kfp_package=False`). The code inside each body runs in the step's container, so every
import is local to it.

    .venv/bin/convbench pipeline compile --out pipeline.yaml
    .venv/bin/pytest -q tests/test_pipeline.py
"""


import copy
from typing import List

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output


def _image() -> str:
    try:
        from convbench.k8s_render import default_image

        return default_image()
    except Exception:  # noqa: BLE001 - compiling must not depend on the deployment files being intact
        return "convbench:0.1.0"


IMAGE = _image()


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare_data(data_source: str, models: List[str], preset: str, epochs: int, seeds: int, max_train_images: int,
                 max_test_images: int, global_batch_size: int, config_yaml: str, dataset: Output[Dataset]) -> str:
    """Validate and decode the images into the uint8 Dataset artifact (with the resolved config); returns the config JSON."""
    from convbench.pipeline_lib import prepare_data as run

    return run(dataset.path, dataset.metadata, data_source, models, preset, epochs, seeds, max_train_images,
               max_test_images, global_batch_size, config_yaml)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_model(dataset: Input[Dataset], model_name: str, workers: int, gpus_per_worker: int, ray_address: str,
                run_name: str, shared_dir: str, resume_dir: str, model: Output[Model], history: Output[Metrics]):
    """Train every seed of one architecture (plain loop, or Ray Train when asked); history as Metrics."""
    from convbench.pipeline_lib import train_and_export

    train_and_export(dataset.path, model_name, model.path, history.path, history.log_metric,
                     workers=workers, gpus_per_worker=gpus_per_worker, ray_address=ray_address, run_name=run_name,
                     shared_dir=shared_dir, resume_dir=resume_dir)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_model(dataset: Input[Dataset], model: Input[Model], metrics: Output[Metrics],
                   confusion: Output[ClassificationMetrics]):
    """Test metrics and the confusion matrix (with class names) of one trained architecture."""
    from convbench.pipeline_lib import evaluate_models

    evaluate_models(dataset.path, model.path, metrics.log_metric, confusion.log_confusion_matrix, metrics.path,
                    confusion.path)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def render_report(dataset: Input[Dataset], models: Input[List[Model]], evaluations: Input[List[Metrics]],
                  report: Output[Markdown], report_html: Output[HTML], run_dir: Output[Artifact], lang: str = "en") -> str:
    """REPORT.md (figures embedded) and its HTML version, plus the whole run directory, in `lang` (en, es); returns the best model."""
    from convbench.pipeline_lib import report_step

    return report_step(dataset.path, [m.path for m in models], run_dir.path, report.path, report_html.path,
                       [e.path for e in evaluations], lang=lang)


COMPONENTS = (prepare_data, train_model, evaluate_model, render_report)


def with_image(component, image: str):
    """A copy of `component` that runs from `image` instead of the default project image."""
    clone = copy.deepcopy(component)
    clone.component_spec.implementation.container.image = image
    return clone
