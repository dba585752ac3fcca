"""switchc: a compiler from Switch Transformer specs to cost reports and training programs."""

__version__ = "0.1.0"
