"""ZK inference proofs with ezkl (SPEC section 2, inference claims).

- `registry.zk.export`   — checkpoint → ONNX, and weights read back out of ONNX by name
- `registry.zk.pipeline` — ezkl settings, calibration, compile, setup, witness, prove; cache; SRS
- `registry.zk.bundle`   — the bundle directory and the digests a claim commits
- `registry.zk.audit`    — the one audit of a bundle (verifier.zk and `proofreg zk verify` run it; docs/zk.md)
- `registry.zk.prover`   — one call from a model and an input to a bundle
- `registry.zk.evm`      — the Solidity verifier of a circuit (on-chain verification)
- `registry.cli.zk`      — `proofreg zk ...`

Submodules import torch/ezkl; this package itself imports nothing heavy, so the CLI starts fast.
"""
