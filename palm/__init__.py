"""palm: the PALM-Net engine (hand models, neural fields, rendering, training, export).

Usable headless and from the ``palm`` command; never imports the GUI (``app/``).
"""

__version__ = "0.1.0"
