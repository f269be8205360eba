"""Cell Commons: the consortium's catalogue of clinical cell-therapy material and MSC datasets."""

__version__ = "0.1.0"
