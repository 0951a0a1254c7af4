"""Methods: one module per method (ROCR first), each reading top-down like its paper's algorithm."""
