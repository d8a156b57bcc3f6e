// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {RegistryStorage} from "./RegistryStorage.sol";
import {Sampling} from "../libraries/Sampling.sol";

/// @title Challenges
/// @notice Challenges and committees: opening, the seed and the committee draw, commit-reveal attestations, and the views of a challenge (SPEC section 5).
abstract contract Challenges is RegistryStorage {
    /// @notice Challenges a claim inside its window, with the challenge bond and up to 8 named segments.
    /// @dev The seed mixes the hash of block `block.number + seedDelay`, unknown to everyone now, with this
    /// block's `prevrandao` (stored as openRandao).
    function openChallenge(uint256 claimId, uint32[] calldata namedSegments)
        external
        payable
        returns (uint256 challengeId)
    {
        if (msg.value != _challengeBond) revert WrongBond(_challengeBond, msg.value);
        Claim storage claim = _existingClaim(claimId);
        {
            ClaimStatus status = claim.status;
            if (status != ClaimStatus.Committed && status != ClaimStatus.Valid) {
                revert ClaimNotChallengeable(claimId, status);
            }
            uint256 windowEnd = uint256(claim.committedAt) + _challengeWindow;
            if (block.number > windowEnd) revert ChallengeWindowClosed(claimId, windowEnd);
        }
        if (msg.sender == claim.prover) revert SelfChallenge();
        uint256 packed = _packNamed(namedSegments, claim.numSegments);
        if (claim.openChallenges == type(uint8).max) revert TooManyOpenChallenges(claimId);

        claim.openChallenges += 1;
        challengeId = _nextChallengeId++;
        ChallengeRecord storage ch = _challenges[challengeId];
        ch.challenger = msg.sender;
        ch.claimId = uint64(claimId);
        ch.status = ChallengeStatus.Open;
        ch.namedCount = uint8(namedSegments.length);
        if (packed != 0) ch.named = packed;
        (uint256 seedBlock, uint256 commitDeadline, uint256 deadline) = _scheduleSeed(ch, claim.prover);
        emit ChallengeOpened(challengeId, claimId, msg.sender, seedBlock, commitDeadline, deadline, namedSegments);
    }

    /// @notice Sets a fresh seed block when nobody drew the committee while the old seed's hash was readable.
    function reseed(uint256 challengeId) external {
        ChallengeRecord storage ch = _openChallenge(challengeId);
        if (ch.drawn) revert CommitteeAlreadyDrawn(challengeId);
        if (block.number <= uint256(ch.seedBlock) + _BLOCKHASH_WINDOW) revert SeedStillAvailable(ch.seedBlock);
        (uint256 seedBlock, uint256 commitDeadline, uint256 deadline) =
            _scheduleSeed(ch, _claims[ch.claimId].prover);
        emit ChallengeReseeded(challengeId, seedBlock, commitDeadline, deadline);
    }

    /// @notice Fixes the seed and draws the committee once the seed block is mined; a no-op once drawn.
    /// @dev Anyone may call it (verifier daemons do); `commitVerdict` calls it too.
    function drawCommittee(uint256 challengeId) public {
        ChallengeRecord storage ch = _openChallenge(challengeId);
        if (!ch.drawn) _draw(ch, challengeId);
    }

    /// @notice Commit phase: a committee member binds itself to a verdict without showing it, once per challenge,
    /// from the seed block until the commit deadline. Draws the committee first if nobody has.
    /// @param commitment `commitmentOf(verdict, resultsHash, reportCid, salt, msg.sender)`; the member in it makes
    /// a copied commitment useless to anyone else.
    function commitVerdict(uint256 challengeId, bytes32 commitment) external {
        ChallengeRecord storage ch = _openChallenge(challengeId);
        uint256 commitDeadline = _commitDeadlineOf(ch);
        if (block.number > commitDeadline) revert CommitPhaseOver(challengeId, commitDeadline);
        if (commitment == 0) revert InvalidCommitment();
        if (!ch.drawn) _draw(ch, challengeId);
        uint256 position = _positionOf(ch, challengeId, msg.sender);
        uint8 committed = ch.committed;
        if (committed & (1 << position) != 0) revert AlreadyCommitted(challengeId, msg.sender);
        ch.committed = committed | uint8(1 << position);
        _commitments[challengeId][position] = commitment;
        emit VerdictCommitted(challengeId, msg.sender, commitment);
    }

    /// @notice Reveal phase: opens the caller's commitment; only revealed verdicts count. Open after the commit
    /// deadline, or earlier once every member has committed (nothing is left to copy), until the deadline.
    /// @param resultsHash keccak256 of the canonical results JSON; `reportCid` holds the full report.
    function revealVerdict(
        uint256 challengeId,
        Verdict verdict,
        bytes32 resultsHash,
        string calldata reportCid,
        bytes32 salt
    ) external {
        ChallengeRecord storage ch = _openChallenge(challengeId);
        uint256 commitDeadline = _commitDeadlineOf(ch);
        uint256 deadline = commitDeadline + _revealPeriod;
        if (block.number > deadline) revert RevealPhaseOver(challengeId, deadline);
        uint256 size = ch.committeeSize;
        if (block.number <= commitDeadline && (!ch.drawn || ch.committed != (1 << size) - 1)) {
            revert RevealNotOpen(challengeId, commitDeadline);
        }
        if (verdict == Verdict.None) revert InvalidVerdict();
        _checkCid(reportCid);
        uint256 position = _positionOf(ch, challengeId, msg.sender);
        if (ch.committed & (1 << position) == 0) revert NotCommitted(challengeId, msg.sender);
        uint16 verdictBits = ch.verdicts;
        if ((verdictBits >> (2 * position)) & 3 != 0) revert AlreadyRevealed(challengeId, msg.sender);
        if (_commitments[challengeId][position] != commitmentOf(verdict, resultsHash, reportCid, salt, msg.sender)) {
            revert CommitmentMismatch(challengeId, msg.sender);
        }
        ch.verdicts = verdictBits | uint16(uint256(verdict) << (2 * position));
        emit Attested(challengeId, msg.sender, verdict, resultsHash, reportCid);
    }

    /// @notice The commitment a member submits: `keccak256(abi.encode(verdict, resultsHash, reportCid, salt,
    /// member))`. `salt` is 32 secret random bytes, so the verdict cannot be guessed from the commitment.
    function commitmentOf(Verdict verdict, bytes32 resultsHash, string calldata reportCid, bytes32 salt, address member)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(verdict, resultsHash, reportCid, salt, member));
    }

    /// @notice The seed: stored once drawn, else the seed block's hash while it is readable.
    function seedOf(uint256 challengeId) external view returns (bytes32) {
        ChallengeRecord storage ch = _existingChallenge(challengeId);
        return ch.drawn ? ch.seed : _readSeed(ch, challengeId);
    }

    /// @notice `block.prevrandao | 1` of the block that opened (or last reseeded) the challenge, an input of its
    /// seed; readable until the committee is drawn, when the seed takes its slot (read it with `seedOf`).
    function openRandaoOf(uint256 challengeId) external view returns (uint256) {
        ChallengeRecord storage ch = _existingChallenge(challengeId);
        if (ch.drawn) revert CommitteeAlreadyDrawn(challengeId);
        return uint256(ch.seed);
    }

    /// @notice The committee of a drawn challenge, in position order.
    function committee(uint256 challengeId) external view returns (address[] memory) {
        ChallengeRecord storage ch = _existingChallenge(challengeId);
        if (!ch.drawn) revert CommitteeNotDrawn(challengeId);
        return _committeeAddresses(_committeeOf(ch), ch.committeeSize);
    }

    /// @notice The verdict of each committee position (None where silent), aligned with `committee`.
    function verdicts(uint256 challengeId) external view returns (Verdict[] memory out) {
        ChallengeRecord storage ch = _existingChallenge(challengeId);
        uint256 size = ch.committeeSize;
        out = new Verdict[](size);
        for (uint256 p; p < size; ++p) {
            out[p] = Verdict((ch.verdicts >> (2 * p)) & 3);
        }
    }

    /// @notice The commitment of each committee position (zero where none), aligned with `committee`.
    function commitments(uint256 challengeId) external view returns (bytes32[] memory out) {
        ChallengeRecord storage ch = _existingChallenge(challengeId);
        uint256 size = ch.committeeSize;
        out = new bytes32[](size);
        for (uint256 p; p < size; ++p) {
            out[p] = _commitments[challengeId][p];
        }
    }

    /// @notice The segments the challenger named.
    function namedSegments(uint256 challengeId) public view returns (uint256[] memory out) {
        ChallengeRecord storage ch = _existingChallenge(challengeId);
        uint256 count = ch.namedCount;
        out = new uint256[](count);
        for (uint256 i; i < count; ++i) {
            out[i] = (ch.named >> (32 * i)) & 0xffffffff;
        }
    }

    /// @notice Segments the committee must check: S draws `keccak256(abi.encode(seed, "segment", j)) % N`,
    /// then the named ones (duplicates kept, in that order). Empty for inference claims.
    function sampledSegments(uint256 challengeId) external view returns (uint256[] memory out) {
        ChallengeRecord storage ch = _existingChallenge(challengeId);
        if (!ch.drawn) revert CommitteeNotDrawn(challengeId);
        uint256 n = _claims[ch.claimId].numSegments;
        if (n == 0) return new uint256[](0);
        uint256[] memory named = namedSegments(challengeId);
        uint256 samples = _samples;
        out = new uint256[](samples + named.length);
        bytes32 seed = ch.seed;
        for (uint256 j; j < samples; ++j) {
            out[j] = Sampling.segmentAt(seed, j, n);
        }
        for (uint256 i; i < named.length; ++i) {
            out[samples + i] = named[i];
        }
    }

    /// @dev Seed block `seedDelay` blocks ahead; commitments close `commitPeriod` blocks after it, reveals
    /// `revealPeriod` blocks after that (both derived from the stored seed block, see `_commitDeadlineOf`).
    /// Also notes the prover's verifier id (+1, 0 if none) for the draw, which then needs no claim read: a
    /// verifier registered later is not eligible for this seed (`_draw`), so the id cannot go stale.
    function _scheduleSeed(ChallengeRecord storage ch, address prover)
        internal
        returns (uint256 seedBlock, uint256 commitDeadline, uint256 deadline)
    {
        seedBlock = block.number + _seedDelay;
        commitDeadline = seedBlock + _commitPeriod;
        deadline = commitDeadline + _revealPeriod;
        Verifier storage pv = _verifiers[prover];
        ch.proverKey = pv.status == VerifierStatus.None ? 0 : uint40(pv.id) + 1;
        ch.seedBlock = uint40(seedBlock);
        // openRandao: this block's prevrandao, fixed before the seed block exists; `| 1` keeps the slot nonzero
        // (so the draw overwrites it for 2,900 gas, not 20,000) and tells a stored value from an empty slot.
        ch.seed = bytes32(block.prevrandao | 1);
    }

    /// @dev Checks the named segments (at most 8, each below `numSegments`) and packs them as uint32s.
    function _packNamed(uint32[] calldata named, uint256 numSegments) internal pure returns (uint256 packed) {
        uint256 count = named.length;
        if (count > MAX_NAMED_SEGMENTS) revert TooManyNamedSegments(count, MAX_NAMED_SEGMENTS);
        for (uint256 i; i < count; ++i) {
            uint256 s = named[i];
            if (s >= numSegments) revert SegmentOutOfRange(s, numSegments);
            packed |= s << (32 * i);
        }
    }

    /// @dev `keccak256(abi.encode(blockhash(seedBlock), openRandao, challengeId))`. openRandao is
    /// `block.prevrandao | 1` of the block that opened (or last reseeded) the challenge, held in the `seed` slot
    /// until the draw overwrites it with the seed. Both inputs are fixed by blocks mined before anyone can draw:
    /// the drawing block's own `prevrandao` is not read, since whoever includes the draw could then pick among
    /// up to 256 values by delaying it (docs/protocol.md section 5). The challenge id keeps two challenges with
    /// the same seed block from sharing a committee and a sample.
    function _readSeed(ChallengeRecord storage ch, uint256 challengeId) internal view returns (bytes32) {
        uint256 seedBlock = ch.seedBlock;
        if (block.number <= seedBlock) revert SeedNotReady(seedBlock);
        if (block.number > seedBlock + _BLOCKHASH_WINDOW) revert SeedExpired(seedBlock);
        return keccak256(abi.encode(blockhash(seedBlock), ch.seed, challengeId));
    }

    /// @dev Picks C distinct eligible verifiers: the j-th pick starts at `committeeStart(seed, j, n)` in the
    /// active list and probes forward to the first eligible verifier not yet picked. Eligible: registered
    /// before the block that opened (or last reseeded) the challenge, i.e. before `seedBlock - seedDelay`,
    /// stake at least `verifierStake`, neither the prover (by the verifier id `_scheduleSeed` noted, which
    /// is the prover's only record that can be eligible) nor the challenger. Writes nothing per member.
    function _draw(ChallengeRecord storage ch, uint256 challengeId) internal {
        bytes32 seed = _readSeed(ch, challengeId);
        uint256 proverKey = ch.proverKey;
        address challenger = ch.challenger;
        uint256 openBlock = uint256(ch.seedBlock) - _seedDelay;
        uint256 n = _active.length;
        uint256 packed;
        uint256 size;
        address[] memory members = new address[](_committeeSize);
        for (uint256 j; j < _committeeSize && n != 0; ++j) {
            uint256 pos = Sampling.committeeStart(seed, j, n);
            bool found;
            for (uint256 probes; probes < n; ++probes) {
                uint256 id = _activeAt(pos);
                if (id + 1 != proverKey && !_isPicked(packed, size, id)) {
                    address account = _verifierAddressAt(id);
                    Verifier storage v = _verifiers[account];
                    if (account != challenger && v.since < openBlock && v.stake >= _verifierStake) {
                        packed |= id << (32 * size);
                        members[size] = account;
                        ++size;
                        found = true;
                        break;
                    }
                }
                pos = pos + 1 == n ? 0 : pos + 1;
            }
            if (!found) break;
        }
        ch.seed = seed;
        ch.drawn = true;
        ch.committeeSize = uint8(size);
        ch.committeeLow = uint128(packed); // shares slot 1 with the fields a commit writes anyway
        if (size > 4) ch.committeeHigh = uint128(packed >> 128);
        assembly ("memory-safe") {
            mstore(members, size) // a smaller pool draws fewer members
        }
        emit CommitteeDrawn(challengeId, seed, members);
    }

    function _isPicked(uint256 packed, uint256 size, uint256 id) internal pure returns (bool) {
        for (uint256 p; p < size; ++p) {
            if ((packed >> (32 * p)) & 0xffffffff == id) return true;
        }
        return false;
    }

    function _committeeAddresses(uint256 packed, uint256 size) internal view returns (address[] memory out) {
        out = new address[](size);
        for (uint256 p; p < size; ++p) {
            out[p] = _verifierAddressAt((packed >> (32 * p)) & 0xffffffff);
        }
    }

    /// @dev Searches positions 0..3 (slot 1, read anyway) before it reads slot 3, so that at C > 4 a member in
    /// the first four positions pays no cold read of positions 4..7.
    function _positionOf(ChallengeRecord storage ch, uint256 challengeId, address account) internal view returns (uint256) {
        Verifier storage v = _verifiers[account];
        if (v.status != VerifierStatus.None) {
            uint256 id = v.id;
            uint256 packed = ch.committeeLow;
            uint256 size = ch.committeeSize;
            for (uint256 p; p < size; ++p) {
                if (p == 4) packed = uint256(ch.committeeHigh) << 128;
                if ((packed >> (32 * p)) & 0xffffffff == id) return p;
            }
        }
        revert NotCommitteeMember(challengeId, account);
    }
}
