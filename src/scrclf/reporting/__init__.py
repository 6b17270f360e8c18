"""Rendering: Markdown tables, charts and the model card template."""
