"""neurocast: real-time MEG/EEG decoding.

The subpackages live in the repository's top-level folders (``streaming/``, ``models/``,
``server/``, ``clients/``) and are mapped onto this namespace by ``pyproject.toml``.
"""

__version__ = "0.1.0"
