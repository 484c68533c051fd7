"""What a person types: parsing a command line, the /conjure command, the one command path."""
