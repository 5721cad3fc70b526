"""The pipeline's four Kubeflow components: typed wrappers, each calling one `convbench.orchestrate.kfp_steps` function; one folder per component.

All four run from the one project image (`k8s/IMAGE`, e.g. convbench:0.1.0, overridable with
`with_image`), which already holds convbench, TensorFlow, Ray and kfp: no pip install at run time
(`install_kfp_package=False`). The code inside each body runs in the step's container, so every
import is local to it.

    .venv/bin/convbench pipeline compile --out pipeline.yaml
    .venv/bin/pytest -q tests/test_pipeline.py
"""

import copy

from convbench.components.prepare_data.component import prepare_data
from convbench.components.train_model.component import train_model
from convbench.components.evaluate_model.component import evaluate_model
from convbench.components.render_report.component import render_report
from convbench.components.image import IMAGE

COMPONENTS = (prepare_data, train_model, evaluate_model, render_report)


def with_image(component, image: str):
    """A copy of `component` that runs from `image` instead of the default project image."""
    clone = copy.deepcopy(component)
    clone.component_spec.implementation.container.image = image
    return clone
