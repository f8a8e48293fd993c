"""palm-studio: the desktop application (Dear PyGui + moderngl) on top of the ``palm`` engine."""

__version__ = "0.1.0"
