"""Metrics: text matching (EM/F1) and, as methods arrive, EigenScore, answer probability, abstention."""
