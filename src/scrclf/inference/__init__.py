"""Loading exported or trained models and predicting (classifier): the export-folder contract,
safe loading, the torch and ONNX backends."""
