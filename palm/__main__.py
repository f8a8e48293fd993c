from palm.cli.main import entry

entry()
