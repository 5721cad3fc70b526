from convbench.components.evaluate_model.component import evaluate_model

__all__ = ["evaluate_model"]
