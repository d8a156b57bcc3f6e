// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ProofHashing
/// @notice Leaf hashing and Merkle proof checks of the proof-registry protocol (SPEC section 4).
/// @dev Leaves are double-hashed as in OpenZeppelin's StandardMerkleTree, interior nodes hash the sorted
/// pair (OpenZeppelin `MerkleProof.verify` semantics). The Python twin is `registry.merkle`; both are pinned
/// by `tests/vectors/merkle.json`.
library ProofHashing {
    /// @notice Leaf of segment `index`: checkpoint i, checkpoint i+1 and the batch file of the segment.
    function segmentLeaf(uint256 index, bytes32 ckptHash, bytes32 nextCkptHash, bytes32 batchesHash)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(bytes.concat(keccak256(abi.encode(index, ckptHash, nextCkptHash, batchesHash))));
    }

    /// @notice Leaf of dataset example `index` with content hash `exampleHash`.
    function exampleLeaf(uint256 index, bytes32 exampleHash) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(index, exampleHash))));
    }

    /// @notice True when `proof` links `leaf` to `root` with sorted-pair hashing.
    function verify(bytes32[] calldata proof, bytes32 root, bytes32 leaf) internal pure returns (bool) {
        bytes32 computed = leaf;
        uint256 length = proof.length;
        for (uint256 i; i < length; ++i) {
            computed = _hashPair(computed, proof[i]);
        }
        return computed == root;
    }

    /// @dev keccak256 of the sorted pair, in scratch space (no memory expansion).
    function _hashPair(bytes32 a, bytes32 b) private pure returns (bytes32 value) {
        assembly ("memory-safe") {
            switch lt(a, b)
            case 1 {
                mstore(0x00, a)
                mstore(0x20, b)
            }
            default {
                mstore(0x00, b)
                mstore(0x20, a)
            }
            value := keccak256(0x00, 0x40)
        }
    }
}
