"""Scoring: metrics, review-level bootstrap, baselines, evaluation reports, benchmark suites,
the domain profile and corpus checks."""
