// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {RegistryStorage} from "./RegistryStorage.sol";
import {ProofHashing} from "../libraries/ProofHashing.sol";
import {IZkVerifier} from "../interfaces/IZkVerifier.sol";

/// @title Claims
/// @notice Training and inference claims: commit, on-chain ZK verification, finalization, segment and example proofs, ownership and lineage (SPEC sections 2 and 5).
abstract contract Claims is RegistryStorage {
    /// @notice Commits a Proof-of-Learning claim with the training bond.
    /// @return claimId the new claim's id (ids start at 1).
    function commitTraining(TrainingClaim calldata c) external payable returns (uint256 claimId) {
        if (msg.value != _trainingBond) revert WrongBond(_trainingBond, msg.value);
        if (c.numSegments == 0 || c.stepsPerSegment == 0) revert InvalidClaim();
        if (c.segmentRoot == 0 || c.chainHead == 0 || c.finalWeightsHash == 0 || c.configHash == 0) {
            revert InvalidClaim();
        }
        if (c.initWeightsHash == 0 || (c.origin == InitOrigin.Parent) != (c.parentClaimId != 0)) revert InvalidClaim();
        _checkCid(c.transcriptCid);
        if (c.parentClaimId != 0) {
            Claim storage parent = _claims[c.parentClaimId];
            if (parent.kind != ClaimKind.Training) revert UnknownParentClaim(c.parentClaimId);
            if (parent.status == ClaimStatus.Invalid) revert ParentClaimRejected(c.parentClaimId);
        }

        WeightsIndex storage index = _byWeights[c.finalWeightsHash];
        uint64 last = index.last;
        if (last != 0) {
            Claim storage previous = _claims[last];
            if (
                previous.prover == msg.sender && previous.root == c.segmentRoot
                    && previous.status != ClaimStatus.Invalid
            ) revert ClaimAlreadyCommitted(last);
        }

        claimId = _nextClaimId++;
        Claim storage claim = _claims[claimId];
        claim.prover = msg.sender;
        claim.committedAt = uint40(block.number);
        claim.kind = ClaimKind.Training;
        claim.status = ClaimStatus.Committed;
        claim.numSegments = c.numSegments;
        claim.root = c.segmentRoot;
        if (c.origin != InitOrigin.Seed) {
            claim.parentClaimId = c.parentClaimId;
            claim.origin = c.origin;
        }
        if (last == 0) index.first = uint64(claimId);
        else _claims[last].nextSameWeights = uint64(claimId);
        index.last = uint64(claimId);
        emit TrainingClaimCommitted(claimId, msg.sender, c.finalWeightsHash, c);
    }

    /// @notice Commits a ZK inference claim with the inference bond.
    /// @dev `modelClaimId` is 0 or a training claim that has not been rejected.
    function commitInference(InferenceClaim calldata c) external payable returns (uint256 claimId) {
        if (msg.value != _inferenceBond) revert WrongBond(_inferenceBond, msg.value);
        if (c.vkHash == 0 || c.proofDigest == 0 || c.instancesHash == 0) revert InvalidClaim();
        _checkCid(c.bundleCid);
        if (c.modelClaimId != 0) {
            Claim storage model = _claims[c.modelClaimId];
            if (model.kind != ClaimKind.Training) revert UnknownModelClaim(c.modelClaimId);
            if (model.status == ClaimStatus.Invalid) revert ModelClaimRejected(c.modelClaimId);
        }
        claimId = _nextClaimId++;
        Claim storage claim = _claims[claimId];
        claim.prover = msg.sender;
        claim.committedAt = uint40(block.number);
        claim.kind = ClaimKind.Inference;
        claim.status = ClaimStatus.Committed;
        claim.root = keccak256(abi.encode(c.vkHash, c.proofDigest, c.instancesHash));
        if (c.modelClaimId != 0) claim.modelClaimId = uint64(c.modelClaimId); // exists, so it fits in 64 bits
        emit InferenceClaimCommitted(claimId, msg.sender, c.modelClaimId, c);
    }

    /// @notice Verifies an inference claim's proof on-chain with an ezkl-rendered verifier contract, no committee.
    /// @dev For this path the claim's `vkHash` is the verifier's EXTCODEHASH (the verifier embeds one vk, so its
    /// code identifies the circuit); `proof` and `instances` must hash to the claim's `proofDigest` and
    /// `instancesHash` (keccak256 of the bytes, keccak256(abi.encode(instances))). An unlinked claim
    /// (modelClaimId 0) is finalized and its bond credited back: the chain checked everything it claims. A linked
    /// claim becomes Valid: that its circuit is the training claim's final model is checked off-chain, so it stays
    /// challengeable until its window ends. The verifier is called with STATICCALL: it cannot change state or
    /// re-enter, so the effects after it keep checks-effects-interactions safe.
    function verifyInferenceOnChain(
        uint256 claimId,
        address verifier,
        bytes calldata proof,
        uint256[] calldata instances
    ) external {
        Claim storage claim = _existingClaim(claimId);
        if (claim.kind != ClaimKind.Inference) revert NotInferenceClaim(claimId);
        ClaimStatus status = claim.status;
        if (status != ClaimStatus.Committed && status != ClaimStatus.Valid) revert ClaimNotFinalizable(claimId, status);
        if (claim.openChallenges != 0) revert ChallengesStillOpen(claimId, claim.openChallenges);
        bytes32 root = keccak256(abi.encode(verifier.codehash, keccak256(proof), keccak256(abi.encode(instances))));
        if (root != claim.root) revert ProofDoesNotMatchClaim(claimId);
        (bool ok, bytes memory ret) =
            verifier.staticcall(abi.encodeWithSelector(IZkVerifier.verifyProof.selector, proof, instances));
        if (!ok || ret.length != 32 || !abi.decode(ret, (bool))) revert ProofRejected(claimId, verifier);

        bool finalized = claim.modelClaimId == 0;
        claim.status = finalized ? ClaimStatus.Finalized : ClaimStatus.Valid;
        emit InferenceVerifiedOnChain(claimId, verifier, finalized);
        if (finalized) {
            emit ClaimFinalized(claimId);
            _credit(claim.prover, _inferenceBond);
        }
    }

    /// @notice Finalizes a claim whose window has passed with no open challenge, and credits its bond back.
    function finalize(uint256 claimId) external {
        Claim storage claim = _existingClaim(claimId);
        ClaimStatus status = claim.status;
        if (status != ClaimStatus.Committed && status != ClaimStatus.Valid) revert ClaimNotFinalizable(claimId, status);
        uint256 windowEnd = uint256(claim.committedAt) + _challengeWindow;
        if (block.number <= windowEnd) revert ChallengeWindowOpen(claimId, windowEnd);
        if (claim.openChallenges != 0) revert ChallengesStillOpen(claimId, claim.openChallenges);
        claim.status = ClaimStatus.Finalized;
        emit ClaimFinalized(claimId);
        _credit(claim.prover, _bondOf(claim.kind));
    }

    /// @notice True when the segment leaf and `proof` lead to the training claim's `segmentRoot`.
    function verifySegment(
        uint256 claimId,
        uint256 index,
        bytes32 ckptHash,
        bytes32 nextCkptHash,
        bytes32 batchesHash,
        bytes32[] calldata proof
    ) external view returns (bool) {
        Claim storage claim = _existingClaim(claimId);
        if (claim.kind != ClaimKind.Training) revert UnknownClaim(claimId);
        if (index >= claim.numSegments) return false;
        return ProofHashing.verify(proof, claim.root, ProofHashing.segmentLeaf(index, ckptHash, nextCkptHash, batchesHash));
    }

    /// @notice True when example `index` with `exampleHash` is in the dataset tree with root `datasetRoot`.
    function verifyExample(bytes32 datasetRoot, uint256 index, bytes32 exampleHash, bytes32[] calldata proof)
        external
        pure
        returns (bool)
    {
        return ProofHashing.verify(proof, datasetRoot, ProofHashing.exampleLeaf(index, exampleHash));
    }

    function segmentLeaf(uint256 index, bytes32 ckptHash, bytes32 nextCkptHash, bytes32 batchesHash)
        external
        pure
        returns (bytes32)
    {
        return ProofHashing.segmentLeaf(index, ckptHash, nextCkptHash, batchesHash);
    }

    function exampleLeaf(uint256 index, bytes32 exampleHash) external pure returns (bytes32) {
        return ProofHashing.exampleLeaf(index, exampleHash);
    }

    /// @notice The prover of the earliest-committed, not rejected, training claim with these final weights.
    function ownerOf(bytes32 finalWeightsHash) external view returns (address) {
        uint256 claimId = ownerClaimOf(finalWeightsHash);
        return claimId == 0 ? address(0) : _claims[claimId].prover;
    }

    /// @notice The claim behind `ownerOf`, 0 if none: claims that are Invalid or tainted are skipped.
    function ownerClaimOf(bytes32 finalWeightsHash) public view returns (uint256) {
        uint64 claimId = _byWeights[finalWeightsHash].first;
        while (claimId != 0) {
            Claim storage claim = _claims[claimId];
            if (claim.status != ClaimStatus.Invalid && !isTainted(claimId)) return claimId;
            claimId = claim.nextSameWeights;
        }
        return 0;
    }

    /// @notice The training claim whose final weights are `claimId`'s checkpoint 0; 0 if none.
    function parentOf(uint256 claimId) external view returns (uint256) {
        return _existingClaim(claimId).parentClaimId;
    }

    /// @notice Where `claimId`'s checkpoint 0 came from (Seed for inference claims).
    function originOf(uint256 claimId) external view returns (InitOrigin) {
        return _existingClaim(claimId).origin;
    }

    /// @notice True when an ancestor of `claimId` (its parent, the parent's parent, ...) was rejected: the
    /// run started from weights nobody vouches for any more.
    /// @dev Parents have smaller ids than their children, so the walk ends.
    function isTainted(uint256 claimId) public view returns (bool) {
        uint256 id = _existingClaim(claimId).parentClaimId;
        while (id != 0) {
            Claim storage ancestor = _claims[id];
            if (ancestor.status == ClaimStatus.Invalid) return true;
            id = ancestor.parentClaimId;
        }
        return false;
    }
}
