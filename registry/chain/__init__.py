"""The chain client: JSON-RPC (web3.py), the embedded in-process EVM, deployments, signers, and the offline
Solidity toolchain that builds the shipped artifact."""
