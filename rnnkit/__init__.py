"""rnnkit: n-gram and tanh-RNN language models for Korean and any other language.

Importing the package is cheap: the C kernel, NumPy-heavy modules and click are
loaded only by the modules that need them, so `rnnkit score` starts fast.

    import rnnkit
    model = rnnkit.load("rnnkit.model")   # an RNN, n-gram or mixture model file, or ARPA
    model.score("나는 버스를 탔다")          # log10 probability
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(path):
    """Load any model file (RNN, n-gram, mixture) or ARPA file; see rnnkit.loader.load."""
    from .loader import load as load_model
    return load_model(path)
