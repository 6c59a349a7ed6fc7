"""ctloop: an MLflow-centred continuous-training loop for tabular binary classification."""

__version__ = "0.1.0"
