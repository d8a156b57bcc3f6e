"""The protocol's rules, which everything else imports: hashing, Merkle trees, sampling, the claim type,
the contract's interface (artifact, enums, errors), parameters and bounded JSON. Nothing here imports the
prover, the stores, the chain client, ZK or the CLI."""
