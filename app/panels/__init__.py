"""Studio panels: each module has ``build(studio)`` (widgets + callbacks) and ``refresh(studio)``."""
