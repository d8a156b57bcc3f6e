// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IZkVerifier
/// @notice The entry point of the Halo2 verifier contracts ezkl renders (`create_evm_verifier`, vk embedded).
/// @dev ezkl declares it non-view; it only reads calldata and calls precompiles, so the registry calls it with
/// STATICCALL.
interface IZkVerifier {
    function verifyProof(bytes calldata proof, uint256[] calldata instances) external returns (bool);
}
