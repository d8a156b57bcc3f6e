"""proof-registry: prover side and the shared protocol core.

The protocol rules live here once: `hashing` (digests, checkpoint chain, canonical weights hash), `merkle`
(OpenZeppelin StandardMerkleTree), `sampling` (challenge draws), `params` (registry parameters),
`deployment` (deployment records) and `artifact` (the compiled contract). The `verifier` package imports
them; nothing here imports `verifier`.
"""

__version__ = "0.1.0"
