"""The model registry, in the spirit of timm.

    from convbench.models import create_model, list_models
    model = create_model("cnn_resnet", num_classes=10)

Importing this package registers every built-in model; TensorFlow loads only when a model is built.
"""

from convbench.models.registry import ModelInfo, create_model, list_models, model_info, register_model

# Registration happens on import of these modules.
from convbench.models import custom as _custom  # noqa: F401,E402
from convbench.models import fast as _fast  # noqa: F401,E402
from convbench.models import transfer as _transfer  # noqa: F401,E402
from convbench.models.fast import initialize_from_data  # noqa: E402

__all__ = ["ModelInfo", "create_model", "initialize_from_data", "list_models", "model_info", "register_model"]
