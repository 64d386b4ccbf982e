"""The science of MultiMAE-DER: data, fusion, models, training and evaluation; never Ray or MLflow."""
