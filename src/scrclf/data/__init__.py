"""Data: reading and validating annotated files (records), corpus tools, agreement, quality gates."""
