"""rnnkit: n-gram and tanh-RNN language models for Korean and any other language.

Importing the package is cheap: the C kernel, NumPy-heavy modules and click are
loaded only by the modules that need them, so `rnnkit score` starts fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
