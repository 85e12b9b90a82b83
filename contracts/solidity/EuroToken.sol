// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title Quartier euro settlement token
/// @notice A euro-denominated token counted in cents (2 decimals). On a test chain the deployer
///         mints it to accounts; in production it would be a regulated e-money token.
contract EuroToken is ERC20, AccessControl {
    /// @notice The role allowed to mint new cents.
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");

    /// @param admin Receives the admin and minter roles.
    constructor(address admin) ERC20("Quartier Euro", "qEUR") {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(MINTER_ROLE, admin);
    }

    /// @notice Amounts are euro cents.
    /// @return Always 2.
    function decimals() public pure override returns (uint8) {
        return 2;
    }

    /// @notice Creates `amountCents` new cents for `to` (emits {Transfer} from the zero address).
    /// @param to The account credited.
    /// @param amountCents The amount in euro cents.
    function mint(address to, uint256 amountCents) external onlyRole(MINTER_ROLE) {
        _mint(to, amountCents);
    }
}
