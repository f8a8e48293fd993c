"""``python main.py`` == ``palm-studio``."""

from app.studio import entry

if __name__ == "__main__":
    entry()
