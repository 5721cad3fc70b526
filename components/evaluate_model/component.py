"""The `evaluate_model` Kubeflow component (kfp 2 lightweight component, run from the project image)."""

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from convbench.components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_model(dataset: Input[Dataset], model: Input[Model], metrics: Output[Metrics],
                   confusion: Output[ClassificationMetrics]):
    """Test metrics and the confusion matrix (with class names) of one trained architecture."""
    from convbench.orchestrate.kfp_steps import evaluate_models

    evaluate_models(dataset.path, model.path, metrics.log_metric, confusion.log_confusion_matrix, metrics.path,
                    confusion.path)
