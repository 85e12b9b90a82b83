// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

// The plain escrow-and-settle design the market is measured against in bench/gas.py (never
// deployed otherwise): every order is its own record, settlement marks each one settled and
// credits producer and consumer balances, with an event per delivery.

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @title Plain escrow and per-order settlement (benchmark baseline)
contract PlainEscrow {
    using SafeERC20 for IERC20;

    struct Order {
        address consumer;
        uint32 energyWh;
        uint32 priceCentsPerKwh;
        bool settled;
        address producer;
    }

    IERC20 public immutable token;
    address public immutable oracle;
    mapping(bytes32 orderId => Order) public orders;
    mapping(address account => uint256 cents) public balanceOf;

    /// @notice One delivery settled.
    event Settled(bytes32 indexed orderId, uint32 deliveredWh, uint256 paidCents, uint256 refundCents);

    error NotOracle();
    error AlreadySettled(bytes32 orderId);
    error TooMuch(bytes32 orderId);

    constructor(IERC20 token_, address oracle_) {
        token = token_;
        oracle = oracle_;
    }

    /// @notice Escrows an order's price from the caller.
    function placeOrder(bytes32 orderId, address producer, uint32 energyWh, uint32 priceCentsPerKwh) external {
        orders[orderId] = Order(msg.sender, energyWh, priceCentsPerKwh, false, producer);
        token.safeTransferFrom(msg.sender, address(this), uint256(energyWh) * priceCentsPerKwh / 1000);
    }

    /// @notice Settles the listed orders with their delivered Wh.
    function settle(bytes32[] calldata orderIds, uint32[] calldata deliveredWh) external {
        if (msg.sender != oracle) revert NotOracle();
        for (uint256 i; i < orderIds.length; ++i) {
            Order storage o = orders[orderIds[i]];
            if (o.settled) revert AlreadySettled(orderIds[i]);
            if (deliveredWh[i] > o.energyWh) revert TooMuch(orderIds[i]);
            o.settled = true;
            uint256 escrow = uint256(o.energyWh) * o.priceCentsPerKwh / 1000;
            uint256 pay = uint256(deliveredWh[i]) * o.priceCentsPerKwh / 1000;
            balanceOf[o.producer] += pay;
            balanceOf[o.consumer] += escrow - pay;
            emit Settled(orderIds[i], deliveredWh[i], pay, escrow - pay);
        }
    }

    /// @notice Pays out the caller's balance.
    function withdraw() external {
        uint256 amount = balanceOf[msg.sender];
        balanceOf[msg.sender] = 0;
        token.safeTransfer(msg.sender, amount);
    }
}
