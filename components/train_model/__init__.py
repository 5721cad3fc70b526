from convbench.components.train_model.component import train_model

__all__ = ["train_model"]
