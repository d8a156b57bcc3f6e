// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {RegistryStorage} from "./registry/RegistryStorage.sol";
import {Claims} from "./registry/Claims.sol";
import {Verifiers} from "./registry/Verifiers.sol";
import {Challenges} from "./registry/Challenges.sol";
import {Settlement} from "./registry/Settlement.sol";

/// @title ProofRegistry
/// @notice On-chain anchor of the proof registry (SPEC sections 2 and 5): bonded training (Proof-of-Learning)
/// and inference (ZK) claims, staked verifiers, bonded challenges settled by a committee drawn from a future
/// block hash, and pull payments.
/// @dev Gas policy: the contract stores only what it enforces (packed claim metadata, the segment root and
/// the ownership links); every other claim field is emitted once in the commit event, which is where clients
/// read it. All durations are in blocks. All money leaves through `withdraw` (pull payments); the only
/// external call is in `withdraw`, after its state change (checks-effects-interactions).
/// @dev The roles live in abstract contracts under `contracts/registry/` (OpenZeppelin style), sharing the
/// storage of `RegistryStorage`; this contract only puts them together, so there is one deployed address.
contract ProofRegistry is Claims, Verifiers, Challenges, Settlement {
    constructor(Params memory p) RegistryStorage(p) {}
}
