// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {RegistryStorage} from "./RegistryStorage.sol";

/// @title Settlement
/// @notice Settlement and payouts: the outcome of a challenge, slashing and rewards, pull payments (SPEC section 5).
abstract contract Settlement is RegistryStorage {
    /// @notice Settles a challenge once a quorum of equal revealed verdicts exists, or after the deadline.
    /// @dev After the deadline the plurality of the revealed verdicts wins; none or a tie is Expired. A commitment
    /// never revealed counts as silence.
    function settle(uint256 challengeId) external {
        ChallengeRecord storage ch = _openChallenge(challengeId);
        uint256 deadline = _deadlineOf(ch);
        bool afterDeadline = block.number > deadline;
        ChallengeStatus outcome = _outcome(_tally(ch), afterDeadline);
        if (outcome == ChallengeStatus.None) revert NotSettleable(challengeId, deadline);

        ch.status = outcome;
        uint256 claimId = ch.claimId;
        Claim storage claim = _claims[claimId];
        claim.openChallenges -= 1;
        emit ChallengeSettled(challengeId, claimId, outcome);
        (uint256 pool, address winner) = _resolveClaim(ch, claim, challengeId, claimId, outcome);
        _distribute(ch, challengeId, outcome, afterDeadline, pool, winner);
    }

    /// @notice Sends the caller everything credited to it.
    function withdraw() external {
        uint256 amount = _pending[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        _pending[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        (bool ok,) = payable(msg.sender).call{value: amount}("");
        if (!ok) revert TransferFailed();
    }

    function _tally(ChallengeRecord storage ch) internal view returns (uint256[4] memory votes) {
        uint256 size = ch.committeeSize;
        uint256 bits = ch.verdicts;
        for (uint256 p; p < size; ++p) {
            ++votes[(bits >> (2 * p)) & 3];
        }
    }

    /// @dev Moves the claim's status for the outcome; returns the losing bond and who keeps what the
    /// verifiers do not get. Valid: the challenger's bond, for the prover. Invalid or Unavailable: the prover's
    /// bond (unless an earlier challenge already took it), for the challenger, who also gets the own bond back.
    /// Expired: nothing is lost; the challenger gets the bond back.
    function _resolveClaim(
        ChallengeRecord storage ch,
        Claim storage claim,
        uint256 challengeId,
        uint256 claimId,
        ChallengeStatus outcome
    ) internal returns (uint256 pool, address winner) {
        if (outcome == ChallengeStatus.Valid) {
            pool = _challengeBond;
            winner = claim.prover;
            if (claim.status == ClaimStatus.Committed) {
                claim.status = ClaimStatus.Valid;
                emit ClaimValidated(claimId, challengeId);
            }
        } else {
            winner = ch.challenger;
            _credit(winner, _challengeBond);
            if (outcome != ChallengeStatus.Expired && claim.status != ClaimStatus.Invalid) {
                pool = _bondOf(claim.kind);
                claim.status = ClaimStatus.Invalid;
                emit ClaimRejected(claimId, challengeId);
            }
        }
    }

    /// @dev Slashes, then shares `verifierRewardBps` of the pool plus everything slashed equally among the
    /// rewarded members; the rest (and any rounding dust) goes to `winner`, so nothing stays behind.
    function _distribute(
        ChallengeRecord storage ch,
        uint256 challengeId,
        ChallengeStatus outcome,
        bool afterDeadline,
        uint256 pool,
        address winner
    ) internal {
        (uint256 slashed, uint256 rewardedMask, uint256 rewarded) =
            _slashCommittee(ch, challengeId, outcome, afterDeadline);
        uint256 each;
        if (rewarded != 0) {
            each = ((pool * _verifierRewardBps) / _BPS + slashed) / rewarded;
            if (each != 0) _rewardCommittee(ch, challengeId, rewardedMask, each);
        }
        uint256 toWinner = pool + slashed - each * rewarded;
        if (toWinner != 0) _credit(winner, toWinner);
    }

    /// @dev Quorum first; after the deadline the strict plurality of given verdicts; None if not settleable.
    function _outcome(uint256[4] memory votes, bool afterDeadline) internal view returns (ChallengeStatus) {
        for (uint256 v = 1; v < 4; ++v) {
            if (votes[v] >= _quorum) return ChallengeStatus(v + 1);
        }
        if (!afterDeadline) return ChallengeStatus.None;
        uint256 best;
        uint256 bestVotes;
        bool tie;
        for (uint256 v = 1; v < 4; ++v) {
            if (votes[v] > bestVotes) {
                best = v;
                bestVotes = votes[v];
                tie = false;
            } else if (votes[v] == bestVotes && bestVotes != 0) {
                tie = true;
            }
        }
        if (best == 0 || tie) return ChallengeStatus.Expired;
        return ChallengeStatus(best + 1);
    }

    /// @dev Slashes outvoted members always, silent members after the deadline; a member whose exit completed
    /// since has no stake left to slash (`requestExit` says how long settling has to reach it first). Returns
    /// what was slashed and which positions share the reward (the majority, or on Expired the members who
    /// attested).
    function _slashCommittee(ChallengeRecord storage ch, uint256 challengeId, ChallengeStatus outcome, bool afterDeadline)
        internal
        returns (uint256 slashed, uint256 rewardedMask, uint256 rewarded)
    {
        uint256 size = ch.committeeSize;
        uint256 packed = _committeeOf(ch);
        uint256 verdictBits = ch.verdicts;
        uint256 winning = outcome == ChallengeStatus.Expired ? 0 : uint256(outcome) - 1;
        for (uint256 p; p < size; ++p) {
            address account = _verifierAddressAt((packed >> (32 * p)) & 0xffffffff);
            Verifier storage v = _verifiers[account];
            uint256 vote = (verdictBits >> (2 * p)) & 3;
            uint256 bps;
            if (vote == 0) {
                if (afterDeadline) bps = _silentSlashBps;
            } else if (winning == 0 || vote == winning) {
                rewardedMask |= 1 << p;
                ++rewarded;
            } else {
                bps = _minoritySlashBps;
            }
            if (bps != 0) {
                uint256 amount = (uint256(v.stake) * bps) / _BPS;
                if (amount != 0) {
                    v.stake -= uint96(amount);
                    slashed += amount;
                    emit VerifierSlashed(account, challengeId, amount);
                }
            }
        }
    }

    /// @dev Rewards compound into stake (the record is written anyway); they are credited instead where the
    /// stake would pass uint96 or the member has completed its exit (its record is deleted).
    function _rewardCommittee(ChallengeRecord storage ch, uint256 challengeId, uint256 mask, uint256 each) internal {
        uint256 size = ch.committeeSize;
        uint256 packed = _committeeOf(ch);
        for (uint256 p; p < size; ++p) {
            if (mask & (1 << p) == 0) continue;
            address account = _verifierAddressAt((packed >> (32 * p)) & 0xffffffff);
            Verifier storage v = _verifiers[account];
            uint256 stake = uint256(v.stake) + each;
            if (stake > type(uint96).max || v.status == VerifierStatus.None) {
                _credit(account, each);
            } else {
                v.stake = uint96(stake);
                emit VerifierRewarded(account, challengeId, each);
            }
        }
    }
}
