"""proof-registry verifier node: imports the protocol core from `registry`, never the reverse."""
