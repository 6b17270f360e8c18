"""Reading serious case review reports: from PDF, Word, web pages and text to classified items.

Boards, inspectors and researchers hold review reports, not JSONL. This subpackage reads
them (:mod:`.readers`), finds their recommendations and the findings they follow
(:mod:`.finder`), classifies them with an exported model and writes the tables of the 2011
study of serious case reviews (:mod:`.report`, :mod:`.render`). Its only imports from the
rest of scrclf live in :mod:`.classify`.
"""

from __future__ import annotations

from .finder import Recommendation, find_recommendations
from .readers import Document, DocumentError, read_document
from .report import run_review

__all__ = [
    "Document",
    "DocumentError",
    "Recommendation",
    "find_recommendations",
    "read_document",
    "run_review",
]
