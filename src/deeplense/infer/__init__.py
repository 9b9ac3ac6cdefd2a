"""Inference: a trained model from its contract, predicting without Lightning."""

from deeplense.infer.predictor import Predictor, load_predictor

__all__ = ["Predictor", "load_predictor"]
