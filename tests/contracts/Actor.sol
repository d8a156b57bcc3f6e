// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// Test-only contract account: forwards calls, and on receiving ether either accepts, rejects, or
/// re-enters `withdraw()` of the registry (to prove pull payments are not re-entrant).
contract Actor {
    enum Mode {
        Accept,
        Reject,
        Reenter
    }

    Mode public mode;
    address public target;
    uint256 public reentryAttempts;
    bool public reentrySucceeded;

    receive() external payable {
        if (mode == Mode.Reject) revert("rejecting ether");
        if (mode == Mode.Reenter && reentryAttempts == 0) {
            reentryAttempts = 1;
            (bool ok,) = target.call(abi.encodeWithSignature("withdraw()"));
            reentrySucceeded = ok;
        }
    }

    function setMode(Mode m, address t) external {
        mode = m;
        target = t;
    }

    function forward(address to, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = to.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(ret, 0x20), mload(ret))
            }
        }
        return ret;
    }
}
