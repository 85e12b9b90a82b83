// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

// Test-only contracts: a token that calls the recipient back on every transfer (as ERC-777 and
// ERC-1363 style tokens can), and an account that uses that call to re-enter the market's withdraw.
// Never deployed outside tests.

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {QuartierMarket} from "../QuartierMarket.sol";

interface ITransferObserver {
    /// @notice Called by {CallbackToken} after tokens reach the observer.
    function onTokensReceived(address from, uint256 amount) external;
}

/// @title A token that calls back contract recipients (test only)
contract CallbackToken is ERC20 {
    constructor() ERC20("Callback Euro", "cbEUR") {}

    /// @notice Mints freely (test only).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 amount) internal override {
        super._update(from, to, amount);
        if (to.code.length != 0 && from != address(0)) {
            // Recipients that do not observe transfers (the market itself) are ignored.
            (bool ok,) = to.call(abi.encodeCall(ITransferObserver.onTokensReceived, (from, amount)));
            ok;
        }
    }
}

/// @title A consumer that re-enters withdraw while being paid (test only)
contract ReentrantWithdrawer is ITransferObserver {
    QuartierMarket public immutable market;
    IERC20 public immutable token;
    /// @notice The revert data of the re-entrant withdraw attempt.
    bytes public reentryError;
    /// @notice How many re-entries were attempted.
    uint256 public reentries;

    constructor(QuartierMarket market_, IERC20 token_) {
        market = market_;
        token = token_;
    }

    /// @notice Approves the market and places an order as this contract.
    function placeOrder(bytes32 orderId, bytes32 offerId, uint64 slotStart, uint32 energyWh, uint32 price) external {
        token.approve(address(market), type(uint256).max);
        market.placeOrder(orderId, offerId, slotStart, energyWh, price);
    }

    /// @notice Cancels an order placed by this contract.
    function cancelOrder(bytes32 orderId) external {
        market.cancelOrder(orderId);
    }

    /// @notice Withdraws this contract's credit.
    function withdraw() external {
        market.withdraw();
    }

    /// @notice Re-enters withdraw once and records how it failed.
    function onTokensReceived(address, uint256) external {
        if (msg.sender != address(token) || reentries != 0) return;
        reentries += 1;
        try market.withdraw() {} catch (bytes memory reason) {
            reentryError = reason;
        }
    }
}
