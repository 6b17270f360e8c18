"""The model: encoder, pooling, heads and loss (model), and building it from config (encoders)."""
