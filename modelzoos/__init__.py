"""modelzoos: the Model Zoos dataset (Schürholt et al., NeurIPS 2022) as software.

Data flows one way: ``catalogue`` (zoo specs) → ``training`` → ``export`` (zoo directories) → builders and
loaders. Start with ``get_zoo("mnist_cnn_seed")`` or ``modelzoos zoos`` on the command line.

Importing the package does not import torch (the command line starts fast, ``modelzoos build`` never loads
it): ``build_model`` is imported from ``modelzoos.architectures`` on first use.
"""

from importlib.metadata import PackageNotFoundError, version

from modelzoos.catalogue import Zoo, get_zoo, list_zoos
from modelzoos.layout import Layout

try:
    __version__ = version("modelzoos")
except PackageNotFoundError:  # a source tree on sys.path without an installed distribution
    __version__ = "unknown"

__all__ = ["Layout", "Zoo", "__version__", "build_model", "get_zoo", "list_zoos"]


def __getattr__(name: str):
    if name == "build_model":
        from modelzoos.architectures import build_model

        return build_model
    raise AttributeError(f"module 'modelzoos' has no attribute {name!r}")
