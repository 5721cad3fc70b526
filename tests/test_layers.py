"""The import direction outside what `lint-imports` sees (pyproject.toml [tool.importlinter]).

grimp reads the convbench package from src/convbench, so the Kubeflow components (components/,
installed as convbench.components) and the pipeline DAG (pipelines/, convbench.pipelines) are
checked here, every import statement counted (also those inside the component bodies):
pipelines -> components -> orchestrate, and nothing in the library imports either.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _convbench_imports(folder: Path) -> dict[str, set[str]]:
    found = {}
    for path in sorted(folder.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("convbench"):
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names if a.name.startswith("convbench")}
        found[str(path.relative_to(ROOT))] = names
    return found


def test_components_call_only_orchestrate():
    for path, names in _convbench_imports(ROOT / "components").items():
        bad = {n for n in names if not n.startswith(("convbench.components", "convbench.orchestrate"))}
        assert not bad, f"{path} imports {sorted(bad)}: a component calls one convbench.orchestrate function"


def test_pipelines_import_only_components():
    for path, names in _convbench_imports(ROOT / "pipelines").items():
        bad = {n for n in names if not n.startswith("convbench.components")}
        assert not bad, f"{path} imports {sorted(bad)}: the DAG is built from components only"


def test_the_library_imports_neither():
    for path, names in _convbench_imports(ROOT / "src" / "convbench").items():
        if path.startswith("src/convbench/cli/"):
            names = {n for n in names if not n.startswith("convbench.pipelines")}  # `convbench pipeline` builds the DAG
        bad = {n for n in names if n.startswith(("convbench.components", "convbench.pipelines"))}
        assert not bad, f"{path} imports {sorted(bad)}"
