"""Metrics: text matching (EM/F1), answer probability and, as methods arrive, EigenScore and abstention."""
