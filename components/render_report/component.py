"""The `render_report` Kubeflow component (kfp 2 lightweight component, run from the project image)."""

from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, HTML, Input, Markdown, Metrics, Model, Output

from convbench.components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def render_report(dataset: Input[Dataset], models: Input[List[Model]], evaluations: Input[List[Metrics]],
                  report: Output[Markdown], report_html: Output[HTML], run_dir: Output[Artifact], lang: str = "en") -> str:
    """REPORT.md (figures embedded) and its HTML version, plus the whole run directory, in `lang` (en, es); returns the best model."""
    from convbench.orchestrate.kfp_steps import report_step

    return report_step(dataset.path, [m.path for m in models], run_dir.path, report.path, report_html.path,
                       [e.path for e in evaluations], lang=lang)
