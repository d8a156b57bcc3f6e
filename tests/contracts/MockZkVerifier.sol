// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// Test-only stand-in for an ezkl verifier: answers `verifyProof` as configured (accept, reject, revert, or
/// try to write state, which the registry's STATICCALL forbids). Real verifiers are tested in tests/test_zk.py.
contract MockZkVerifier {
    enum Mode {
        Accept,
        Reject,
        Revert,
        WriteState
    }

    Mode public mode;
    uint256 public calls;

    function setMode(Mode m) external {
        mode = m;
    }

    function verifyProof(bytes calldata, uint256[] calldata) external returns (bool) {
        if (mode == Mode.Revert) revert("bad proof");
        if (mode == Mode.WriteState) {
            calls += 1;
            return true;
        }
        return mode == Mode.Accept;
    }
}
