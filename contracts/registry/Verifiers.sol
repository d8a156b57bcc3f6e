// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {RegistryStorage} from "./RegistryStorage.sol";

/// @title Verifiers
/// @notice The verifier set: registration with a stake, stake top-ups and withdrawals, the exit delay (SPEC section 5).
abstract contract Verifiers is RegistryStorage {
    /// @notice Registers the caller as a verifier; `msg.value` (at least `verifierStake`) is the stake.
    function registerVerifier() external payable {
        Verifier storage v = _verifiers[msg.sender];
        if (v.status != VerifierStatus.None) revert AlreadyRegistered(msg.sender);
        if (msg.value < _verifierStake) revert InsufficientStake(_verifierStake, msg.value);
        if (msg.value > type(uint96).max) revert StakeTooLarge();
        uint256 id = _verifierAddresses.length;
        _verifierAddresses.push(msg.sender);
        v.stake = uint96(msg.value);
        v.id = uint32(id);
        v.status = VerifierStatus.Active;
        v.since = uint40(block.number);
        v.activeIndex = uint32(_active.length);
        _active.push(uint32(id));
        emit VerifierRegistered(msg.sender, id, msg.value);
    }

    /// @notice Adds `msg.value` to an active verifier's stake (e.g. to become eligible again after a slash).
    function increaseStake() external payable {
        Verifier storage v = _activeVerifier(msg.sender);
        if (msg.value == 0) revert ZeroAmount();
        uint256 stake = uint256(v.stake) + msg.value;
        if (stake > type(uint96).max) revert StakeTooLarge();
        v.stake = uint96(stake);
        emit StakeIncreased(msg.sender, msg.value, stake);
    }

    /// @notice Moves stake above `verifierStake` (e.g. earned rewards) to the caller's withdrawable balance.
    function withdrawExcessStake(uint256 amount) external {
        Verifier storage v = _activeVerifier(msg.sender);
        if (amount == 0) revert ZeroAmount();
        uint256 stake = v.stake;
        if (amount > stake || stake - amount < _verifierStake) {
            revert InsufficientStake(_verifierStake, amount > stake ? 0 : stake - amount);
        }
        v.stake = uint96(stake - amount);
        emit StakeDecreased(msg.sender, amount, stake - amount);
        _credit(msg.sender, amount);
    }

    /// @notice Leaves the pool committees are drawn from at once; the stake stays slashable until `completeExit`,
    /// `exitDelay` blocks later. The constructor makes `exitDelay` exceed `commitPeriod + revealPeriod`, so every
    /// committee the caller was drawn for (all before this block) is past its reveal deadline, and settleable by
    /// anyone, at least `exitDelay - commitPeriod - revealPeriod` blocks before the stake can leave.
    function requestExit() external {
        Verifier storage v = _activeVerifier(msg.sender);
        _removeActive(v.activeIndex);
        uint256 exitBlock = block.number + _exitDelay;
        v.status = VerifierStatus.Exiting;
        v.since = uint40(exitBlock);
        v.activeIndex = 0;
        emit VerifierExitRequested(msg.sender, exitBlock);
    }

    /// @notice After the exit delay, credits the stake back. Rewards of a committee settled later are credited to
    /// the account's pending balance (`_rewardCommittee`); nothing is left in the deleted record.
    function completeExit() external {
        Verifier storage v = _verifiers[msg.sender];
        if (v.status != VerifierStatus.Exiting) revert NotExiting(msg.sender);
        if (block.number < v.since) revert ExitNotReady(v.since);
        uint256 amount = v.stake;
        delete _verifiers[msg.sender];
        emit VerifierExited(msg.sender, amount);
        _credit(msg.sender, amount);
    }

    function _removeActive(uint256 index) internal {
        uint256 lastIndex = _active.length - 1;
        if (index != lastIndex) {
            uint32 moved = _active[lastIndex];
            _active[index] = moved;
            _verifiers[_verifierAddresses[moved]].activeIndex = uint32(index);
        }
        _active.pop();
    }
}
