from palm.cli import entry

entry()
