"""charrnn: learn the style of a text with a recurrent network and write more of it.

The package root stays light (no torch import) so that ``charrnn --help`` is instant;
import the library modules directly: ``charrnn.train``, ``charrnn.sample``, ``charrnn.model``.
"""

__version__ = "0.1.0"
