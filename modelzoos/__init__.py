"""modelzoos: the Model Zoos dataset (Schürholt et al., NeurIPS 2022) as software.

Data flows one way: ``catalogue`` (zoo specs) → ``training`` → ``export`` (zoo directories) → builders and
loaders. Start with ``get_zoo("mnist_cnn_seed")`` or ``modelzoos zoos`` on the command line.
"""

from modelzoos.architectures import Layout, build_model
from modelzoos.catalogue import Zoo, get_zoo, list_zoos

__all__ = ["Layout", "Zoo", "build_model", "get_zoo", "list_zoos"]
