"""Inference: a trained model from its contract (checkpoint, ONNX export or shipped weights),
predicting without Lightning; cutouts to catalogues; exports."""

from deeplense.infer.predictor import Predictor, load_predictor

__all__ = ["Predictor", "load_predictor"]
