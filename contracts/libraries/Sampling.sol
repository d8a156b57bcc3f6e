// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Sampling
/// @notice The deterministic draws of a challenge (SPEC section 5). Daemons call the registry's views that use
/// these; `registry.sampling` mirrors them in Python for off-chain planning and is pinned by test vectors.
library Sampling {
    /// @notice j-th sampled segment: `uint256(keccak256(abi.encode(seed, "segment", j))) % n`.
    function segmentAt(bytes32 seed, uint256 j, uint256 n) internal pure returns (uint256) {
        return uint256(keccak256(abi.encode(seed, "segment", j))) % n;
    }

    /// @notice Start position of the j-th committee pick: `uint256(keccak256(abi.encode(seed, "committee", j))) % n`.
    /// @dev The same hash as `abi.encode` gives, built in scratch memory past the free pointer (the draw calls it
    /// for every pick). Requires `n != 0`.
    function committeeStart(bytes32 seed, uint256 j, uint256 n) internal pure returns (uint256 start) {
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, seed)
            mstore(add(m, 0x20), 0x60) // offset of the string's tail
            mstore(add(m, 0x40), j)
            mstore(add(m, 0x60), 9) // length of "committee"
            mstore(add(m, 0x80), "committee")
            start := mod(keccak256(m, 0xa0), n)
        }
    }
}
