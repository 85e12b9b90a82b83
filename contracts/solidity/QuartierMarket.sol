// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title Quartier neighbourhood energy market: escrow, metered settlement, pull payments
/// @notice Producers list offers (zone, delivery window, Wh, price per kWh); consumers place orders
///         for one 15-minute slot of an offer, locking the price in escrow. After the slot, the
///         oracle posts the metered Wh delivered for every order of the (zone, slot) in batches, in
///         the order the orders were placed; each order pays the producer for what was delivered and
///         refunds the consumer the rest. Everyone pulls what they are owed with {withdraw}.
///
///         Money: euro cents of {token}. Energy: Wh. Price: cents per kWh. Every amount is
///         `floor(Wh * priceCentsPerKwh / 1000)`: escrow = amount(ordered Wh), payment =
///         amount(delivered Wh), refund = escrow - payment, so escrow = payment + refund exactly.
///
///         Ids (zone, offer, order) are opaque bytes32 chosen off chain (hashes); no personal data.
///
///         Gas: settlement writes no per-order storage. A slot's orders sit in one array in placement
///         order and a batch settles the next `n` of them (a cursor), so a delivery costs one cold
///         storage read of its order plus the credit writes, which net per producer in a batch.
contract QuartierMarket is AccessControl, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    // --- roles and constants ----------------------------------------------------------------

    /// @notice Posts metered settlement batches.
    bytes32 public constant ORACLE_ROLE = keccak256("ORACLE_ROLE");
    /// @notice Pauses and unpauses trading.
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");
    /// @notice Length of a delivery slot, in seconds.
    uint64 public constant SLOT_SECONDS = 900;

    /// @notice The settlement token (euro cents).
    IERC20 public immutable token;
    /// @notice Trading on a slot (orders, cancellations) closes this many seconds before it starts.
    uint64 public immutable gateClosureSeconds;
    /// @notice After a slot ends, its consumers may reclaim escrow not settled within this many seconds.
    uint64 public immutable settlementTimeoutSeconds;

    // --- state ---------------------------------------------------------------------------------

    /// One storage slot, the only one settlement reads per delivery.
    struct Order {
        address consumer;
        uint32 offerIndex;
        uint32 energyWh; // 0 once cancelled or reclaimed
        uint32 priceCentsPerKwh;
    }

    struct Offer {
        address producer;
        uint32 priceCentsPerKwh;
        uint32 remainingWh;
        uint32 zoneIndex;
        uint32 firstSlot; // slot numbers: slot start / SLOT_SECONDS
        uint32 endSlot; // exclusive
        bool withdrawn;
    }

    struct OrderRef {
        uint64 bookKey;
        uint32 position;
        bool exists;
    }

    /// The header (count, cursor, complete) shares one slot, written by the first order, so
    /// settlement only ever rewrites a nonzero slot.
    struct SlotBook {
        uint32 count; // orders placed
        uint32 settled; // orders settled so far (the cursor)
        bool complete;
        mapping(uint256 position => Order) orders; // placement order: settlement batches follow it
        mapping(uint256 position => bytes32) orderIds;
    }

    /// Market-wide figures in one slot: one write per settlement batch.
    struct Totals {
        uint96 escrowed;
        uint96 credited;
        uint64 lastSettledSlotStart;
    }

    mapping(uint256 index => Offer) private _offers;
    uint32 private _offerCount;
    mapping(bytes32 offerId => uint256 indexPlusOne) private _offerIndex;
    bytes32[] private _zones;
    mapping(bytes32 zone => uint256 indexPlusOne) private _zoneIndex;
    mapping(uint64 bookKey => SlotBook) private _books;
    mapping(bytes32 orderId => OrderRef) private _orderRefs;

    /// Cents each account can withdraw, plus one once the account has traded. The slot never
    /// returns to zero (withdraw leaves 1), so a settlement's credit write is always the cheap
    /// nonzero-to-nonzero kind; the one expensive first write is paid by the account's own first
    /// listing or order.
    mapping(address account => uint256 centsPlusOne) private _creditPlusOne;
    Totals private _totals;

    // --- events --------------------------------------------------------------------------------

    /// @notice A zone was seen for the first time.
    event ZoneRegistered(bytes32 indexed zone, uint32 zoneIndex);
    /// @notice A producer listed energy for a delivery window.
    event OfferListed(
        bytes32 indexed offerId,
        address indexed producer,
        bytes32 indexed zone,
        uint64 windowStart,
        uint64 windowEnd,
        uint32 energyWh,
        uint32 priceCentsPerKwh
    );
    /// @notice A producer took the unsold part of an offer off the market.
    event OfferWithdrawn(bytes32 indexed offerId, uint32 unsoldWh);
    /// @notice A consumer bought energy for one slot; `escrowCents` moved into the market.
    event OrderPlaced(
        bytes32 indexed orderId,
        bytes32 indexed offerId,
        address indexed consumer,
        uint64 slotStart,
        uint32 position,
        uint32 energyWh,
        uint32 priceCentsPerKwh,
        uint256 escrowCents
    );
    /// @notice A consumer cancelled an order before gate closure; the escrow is credited back.
    event OrderCancelled(bytes32 indexed orderId, uint256 refundCents);
    /// @notice An order's slot was not settled in time; the escrow is credited back.
    event OrderReclaimed(bytes32 indexed orderId, uint256 refundCents);
    /// @notice Metered delivery for the orders at positions `firstPosition ..` of a slot
    ///         (`deliveredWh`: 4-byte big-endian Wh per order).
    event SettlementBatch(
        bytes32 indexed zone,
        uint64 indexed slotStart,
        uint32 firstPosition,
        bytes deliveredWh,
        uint256 paidCents,
        uint256 refundedCents
    );
    /// @notice Every order of the slot is settled.
    event SlotSettled(bytes32 indexed zone, uint64 indexed slotStart, uint32 orders);
    /// @notice An account pulled what it was owed.
    event Withdrawn(address indexed account, uint256 amountCents);

    // --- errors --------------------------------------------------------------------------------

    error ZeroAddress();
    error InvalidWindow(uint64 windowStart, uint64 windowEnd);
    error SlotNotAligned(uint64 slotStart);
    error ZeroEnergy();
    error OfferExists(bytes32 offerId);
    error UnknownOffer(bytes32 offerId);
    error NotOfferProducer(bytes32 offerId, address caller);
    error OfferNotActive(bytes32 offerId);
    error SlotOutsideWindow(bytes32 offerId, uint64 slotStart);
    error InsufficientOffer(bytes32 offerId, uint32 requestedWh, uint32 remainingWh);
    error PriceBelowOffer(bytes32 offerId, uint32 priceCentsPerKwh, uint32 offerPriceCentsPerKwh);
    error GateClosed(uint64 slotStart, uint64 gateClosure);
    error OrderExists(bytes32 orderId);
    error UnknownOrder(bytes32 orderId);
    error NotOrderConsumer(bytes32 orderId, address caller);
    error OrderNotOpen(bytes32 orderId);
    error UnknownZone(bytes32 zone);
    error SlotNotEnded(bytes32 zone, uint64 slotStart);
    error SlotAlreadySettled(bytes32 zone, uint64 slotStart);
    error BatchOutOfOrder(bytes32 zone, uint64 slotStart, uint32 expectedPosition, uint32 firstPosition);
    error BatchExceedsSlot(bytes32 zone, uint64 slotStart, uint256 unsettledOrders, uint256 batchLength);
    error EmptyBatch(bytes32 zone, uint64 slotStart);
    error MalformedDeliveries(uint256 byteLength);
    error DeliveryExceedsOrder(uint32 position, uint32 deliveredWh, uint32 orderedWh);
    error OrderAlreadySettled(bytes32 orderId);
    error SettlementNotOverdue(bytes32 orderId, uint64 reclaimableAt);
    error NothingToWithdraw(address account);

    // --- construction --------------------------------------------------------------------------

    /// @param token_ The settlement token (euro cents).
    /// @param admin Receives the admin and pauser roles.
    /// @param oracle Receives the oracle role (the settlement service account).
    /// @param gateClosureSeconds_ How long before a slot starts trading on it closes.
    /// @param settlementTimeoutSeconds_ How long after a slot ends its consumers must wait to reclaim
    ///        escrow that the oracle did not settle.
    constructor(
        IERC20 token_,
        address admin,
        address oracle,
        uint64 gateClosureSeconds_,
        uint64 settlementTimeoutSeconds_
    ) {
        if (address(token_) == address(0) || admin == address(0) || oracle == address(0)) revert ZeroAddress();
        token = token_;
        gateClosureSeconds = gateClosureSeconds_;
        settlementTimeoutSeconds = settlementTimeoutSeconds_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(PAUSER_ROLE, admin);
        _grantRole(ORACLE_ROLE, oracle);
    }

    // --- producers -----------------------------------------------------------------------------

    /// @notice Lists `energyWh` for delivery in the zone during [windowStart, windowEnd), at a price
    ///         per kWh. Orders may take it slot by slot until it is sold or withdrawn.
    /// @param offerId Opaque id chosen by the caller; must be new.
    /// @param zone Opaque id of the grid zone.
    /// @param windowStart Unix seconds, a multiple of SLOT_SECONDS, whose gate has not closed.
    /// @param windowEnd Unix seconds, a multiple of SLOT_SECONDS, after windowStart.
    /// @param energyWh Energy offered over the whole window, Wh.
    /// @param priceCentsPerKwh The lowest price accepted, euro cents per kWh.
    function listOffer(
        bytes32 offerId,
        bytes32 zone,
        uint64 windowStart,
        uint64 windowEnd,
        uint32 energyWh,
        uint32 priceCentsPerKwh
    ) external whenNotPaused {
        if (windowStart % SLOT_SECONDS != 0 || windowEnd % SLOT_SECONDS != 0 || windowEnd <= windowStart) {
            revert InvalidWindow(windowStart, windowEnd);
        }
        if (energyWh == 0) revert ZeroEnergy();
        if (_offerIndex[offerId] != 0) revert OfferExists(offerId);
        _requireGateOpen(windowStart);
        uint32 zoneIndex = _registerZone(zone);
        uint32 index = _offerCount++;
        _offers[index] = (
            Offer({
                producer: msg.sender,
                priceCentsPerKwh: priceCentsPerKwh,
                remainingWh: energyWh,
                zoneIndex: zoneIndex,
                firstSlot: uint32(windowStart / SLOT_SECONDS),
                endSlot: uint32(windowEnd / SLOT_SECONDS),
                withdrawn: false
            })
        );
        _offerIndex[offerId] = uint256(index) + 1;
        _openCreditAccount(msg.sender);
        emit OfferListed(offerId, msg.sender, zone, windowStart, windowEnd, energyWh, priceCentsPerKwh);
    }

    /// @notice Takes the unsold part of an offer off the market. Orders already placed stay binding.
    /// @param offerId The offer, listed by the caller.
    function withdrawOffer(bytes32 offerId) external {
        Offer storage offer = _offers[_offerIndexOf(offerId)];
        if (offer.producer != msg.sender) revert NotOfferProducer(offerId, msg.sender);
        if (offer.withdrawn) revert OfferNotActive(offerId);
        uint32 unsold = offer.remainingWh;
        offer.withdrawn = true;
        offer.remainingWh = 0;
        emit OfferWithdrawn(offerId, unsold);
    }

    // --- consumers -----------------------------------------------------------------------------

    /// @notice Buys `energyWh` of an offer for one slot of its window, moving the price
    ///         `floor(energyWh * priceCentsPerKwh / 1000)` cents from the caller into escrow
    ///         (the caller must have approved the market on the token).
    /// @param orderId Opaque id chosen by the caller; must be new.
    /// @param offerId The offer bought from.
    /// @param slotStart Unix seconds, the start of a slot inside the offer's window, gate still open.
    /// @param energyWh Energy bought, Wh; at most what the offer has left.
    /// @param priceCentsPerKwh The price paid, at least the offer's (a bid above it, as in an auction,
    ///        pays the producer the bid).
    function placeOrder(bytes32 orderId, bytes32 offerId, uint64 slotStart, uint32 energyWh, uint32 priceCentsPerKwh)
        external
        whenNotPaused
        nonReentrant
    {
        if (energyWh == 0) revert ZeroEnergy();
        if (_orderRefs[orderId].exists) revert OrderExists(orderId);
        uint256 offerIndex = _offerIndexOf(offerId);
        Offer storage offer = _offers[offerIndex];
        if (offer.withdrawn) revert OfferNotActive(offerId);
        if (slotStart % SLOT_SECONDS != 0) revert SlotNotAligned(slotStart);
        uint32 slot = uint32(slotStart / SLOT_SECONDS);
        if (slot < offer.firstSlot || slot >= offer.endSlot) revert SlotOutsideWindow(offerId, slotStart);
        _requireGateOpen(slotStart);
        if (energyWh > offer.remainingWh) revert InsufficientOffer(offerId, energyWh, offer.remainingWh);
        if (priceCentsPerKwh < offer.priceCentsPerKwh) {
            revert PriceBelowOffer(offerId, priceCentsPerKwh, offer.priceCentsPerKwh);
        }

        uint256 escrow = _amount(energyWh, priceCentsPerKwh);
        offer.remainingWh -= energyWh;
        uint64 bookKey = _bookKey(offer.zoneIndex, slot);
        SlotBook storage book = _books[bookKey];
        uint32 position = book.count++;
        book.orders[position] = Order({
            consumer: msg.sender,
            offerIndex: uint32(offerIndex),
            energyWh: energyWh,
            priceCentsPerKwh: priceCentsPerKwh
        });
        book.orderIds[position] = orderId;
        _orderRefs[orderId] = OrderRef({bookKey: bookKey, position: position, exists: true});
        _openCreditAccount(msg.sender);
        _totals.escrowed += uint96(escrow);
        emit OrderPlaced(orderId, offerId, msg.sender, slotStart, position, energyWh, priceCentsPerKwh, escrow);

        token.safeTransferFrom(msg.sender, address(this), escrow);
    }

    /// @notice Cancels an order before its slot's gate closes: the energy returns to the offer
    ///         (unless withdrawn) and the whole escrow is credited to the consumer.
    /// @param orderId The order, placed by the caller.
    function cancelOrder(bytes32 orderId) external {
        (OrderRef memory ref, Order storage order) = _order(orderId);
        if (order.consumer != msg.sender) revert NotOrderConsumer(orderId, msg.sender);
        if (order.energyWh == 0) revert OrderNotOpen(orderId);
        _requireGateOpen(uint64(uint32(ref.bookKey)) * SLOT_SECONDS);

        uint32 energyWh = order.energyWh;
        uint256 refund = _amount(energyWh, order.priceCentsPerKwh);
        Offer storage offer = _offers[order.offerIndex];
        if (!offer.withdrawn) offer.remainingWh += energyWh;
        order.energyWh = 0;
        _release(order.consumer, refund);
        emit OrderCancelled(orderId, refund);
    }

    /// @notice Credits a consumer the whole escrow of an order whose slot the oracle did not settle
    ///         within settlementTimeoutSeconds after it ended. Anyone may call it; the order then
    ///         settles as "nothing delivered".
    /// @param orderId The unsettled order.
    function reclaimUnsettled(bytes32 orderId) external {
        (OrderRef memory ref, Order storage order) = _order(orderId);
        if (order.energyWh == 0) revert OrderNotOpen(orderId);
        SlotBook storage book = _books[ref.bookKey];
        if (ref.position < book.settled) revert OrderAlreadySettled(orderId);
        uint64 reclaimableAt = (uint64(uint32(ref.bookKey)) + 1) * SLOT_SECONDS + settlementTimeoutSeconds;
        if (block.timestamp < reclaimableAt) revert SettlementNotOverdue(orderId, reclaimableAt);

        uint256 refund = _amount(order.energyWh, order.priceCentsPerKwh);
        order.energyWh = 0;
        _release(order.consumer, refund);
        emit OrderReclaimed(orderId, refund);
    }

    // --- settlement ----------------------------------------------------------------------------

    /// @notice Settles the next orders of a (zone, slot) with their metered delivery. A batch covers
    ///         positions firstPosition .. firstPosition + deliveredWh.length - 1 in placement order;
    ///         batches must follow one another, and the slot is settled when the last order is.
    ///         Each order pays floor(delivered * price / 1000) to the producer and credits the rest
    ///         of its escrow back to the consumer; a cancelled or reclaimed order must show 0 Wh.
    ///         No external calls: it only moves credits inside the market.
    /// @param zone The zone.
    /// @param slotStart Unix seconds; the slot must have ended.
    /// @param firstPosition The number of orders of the slot already settled.
    /// @param deliveredWh Metered Wh delivered per order, at most what each order bought, packed as
    ///        4-byte big-endian unsigned integers (a quarter of the calldata of a uint32[]).
    function settleBatch(bytes32 zone, uint64 slotStart, uint32 firstPosition, bytes calldata deliveredWh)
        external
        onlyRole(ORACLE_ROLE)
        whenNotPaused
    {
        if (slotStart % SLOT_SECONDS != 0) revert SlotNotAligned(slotStart);
        uint256 zoneIndexPlusOne = _zoneIndex[zone];
        if (zoneIndexPlusOne == 0) revert UnknownZone(zone);
        if (block.timestamp < slotStart + SLOT_SECONDS) revert SlotNotEnded(zone, slotStart);
        SlotBook storage book = _books[_bookKey(uint32(zoneIndexPlusOne - 1), uint32(slotStart / SLOT_SECONDS))];
        if (book.complete) revert SlotAlreadySettled(zone, slotStart);
        uint32 done = book.settled;
        if (firstPosition != done) revert BatchOutOfOrder(zone, slotStart, done, firstPosition);
        if (deliveredWh.length % 4 != 0) revert MalformedDeliveries(deliveredWh.length);
        uint256 total = book.count;
        uint256 n = deliveredWh.length / 4;
        if (n > total - done) revert BatchExceedsSlot(zone, slotStart, total - done, n);
        if (n == 0 && total != 0) revert EmptyBatch(zone, slotStart);

        (uint256 paid, uint256 refunded) = _settleOrders(book, done, deliveredWh);

        uint32 settled = uint32(done + n);
        bool complete = settled == total;
        book.settled = settled;
        if (complete) book.complete = true;
        _moveToCredit(paid + refunded, complete ? slotStart : 0);
        emit SettlementBatch(zone, slotStart, firstPosition, deliveredWh, paid, refunded);
        if (complete) emit SlotSettled(zone, slotStart, uint32(total));
    }

    // --- payments ------------------------------------------------------------------------------

    /// @notice Transfers everything the caller is owed (payments and refunds) to the caller.
    ///         Stays available while the market is paused, so credited money can always leave.
    function withdraw() external nonReentrant {
        uint256 amount = creditOf(msg.sender);
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        _creditPlusOne[msg.sender] = 1;
        _totals.credited -= uint96(amount);
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    // --- pause ---------------------------------------------------------------------------------

    /// @notice Stops listing, ordering and settlement. Cancellation, offer withdrawal, reclaiming
    ///         and withdrawals stay open so nobody's money is locked by a pause.
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @notice Resumes trading.
    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    // --- views ---------------------------------------------------------------------------------

    /// @notice Cents locked in orders not yet settled, cancelled or reclaimed.
    /// @return The amount in cents.
    function totalEscrowed() external view returns (uint256) {
        return _totals.escrowed;
    }

    /// @notice Cents owed to accounts and not yet withdrawn.
    /// @return The amount in cents.
    function totalCredited() external view returns (uint256) {
        return _totals.credited;
    }

    /// @notice Start (unix seconds) of the latest slot whose settlement completed, in any zone.
    /// @return Unix seconds, 0 before the first.
    function lastSettledSlotStart() external view returns (uint64) {
        return _totals.lastSettledSlotStart;
    }

    /// @notice Cents `account` can withdraw (payments and refunds).
    /// @param account The account.
    /// @return cents The amount owed.
    function creditOf(address account) public view returns (uint256 cents) {
        uint256 stored = _creditPlusOne[account];
        return stored == 0 ? 0 : stored - 1;
    }

    /// @notice An offer's terms and what is left of it.
    /// @param offerId The offer.
    /// @return producer The producer's account.
    /// @return zone The zone.
    /// @return windowStart Unix seconds.
    /// @return windowEnd Unix seconds.
    /// @return remainingWh Energy not yet sold (0 once withdrawn).
    /// @return priceCentsPerKwh The asking price.
    /// @return withdrawn Whether the producer withdrew it.
    function offerOf(bytes32 offerId)
        external
        view
        returns (
            address producer,
            bytes32 zone,
            uint64 windowStart,
            uint64 windowEnd,
            uint32 remainingWh,
            uint32 priceCentsPerKwh,
            bool withdrawn
        )
    {
        Offer storage o = _offers[_offerIndexOf(offerId)];
        return (
            o.producer,
            _zones[o.zoneIndex],
            uint64(o.firstSlot) * SLOT_SECONDS,
            uint64(o.endSlot) * SLOT_SECONDS,
            o.remainingWh,
            o.priceCentsPerKwh,
            o.withdrawn
        );
    }

    /// @notice An order and where it stands.
    /// @param orderId The order.
    /// @return consumer The consumer's account.
    /// @return zone The zone.
    /// @return slotStart Unix seconds.
    /// @return position Its place in the slot's settlement order.
    /// @return energyWh Energy bought (0 once cancelled or reclaimed).
    /// @return priceCentsPerKwh The price paid.
    /// @return settled Whether a settlement batch covered it.
    function orderOf(bytes32 orderId)
        external
        view
        returns (
            address consumer,
            bytes32 zone,
            uint64 slotStart,
            uint32 position,
            uint32 energyWh,
            uint32 priceCentsPerKwh,
            bool settled
        )
    {
        (OrderRef memory ref, Order storage o) = _order(orderId);
        return (
            o.consumer,
            _zones[uint32(ref.bookKey >> 32)],
            uint64(uint32(ref.bookKey)) * SLOT_SECONDS,
            ref.position,
            o.energyWh,
            o.priceCentsPerKwh,
            ref.position < _books[ref.bookKey].settled
        );
    }

    /// @notice How far a (zone, slot) is settled.
    /// @param zone The zone.
    /// @param slotStart Unix seconds.
    /// @return orders Orders placed for the slot.
    /// @return settled Orders settled so far.
    /// @return complete Whether settlement of the slot finished.
    function slotState(bytes32 zone, uint64 slotStart)
        external
        view
        returns (uint32 orders, uint32 settled, bool complete)
    {
        SlotBook storage book = _bookOf(zone, slotStart);
        return (book.count, book.settled, book.complete);
    }

    /// @notice The ids of a slot's orders in settlement order, from position `from`, at most `count`.
    /// @param zone The zone.
    /// @param slotStart Unix seconds.
    /// @param from First position.
    /// @param count Most ids returned.
    /// @return ids The order ids.
    function slotOrderIds(bytes32 zone, uint64 slotStart, uint256 from, uint256 count)
        external
        view
        returns (bytes32[] memory ids)
    {
        SlotBook storage book = _bookOf(zone, slotStart);
        uint256 end = from + count < book.count ? from + count : book.count;
        if (from >= end) return new bytes32[](0);
        ids = new bytes32[](end - from);
        for (uint256 i = from; i < end; ++i) {
            ids[i - from] = book.orderIds[i];
        }
    }

    // --- internals -----------------------------------------------------------------------------

    /// The one rounding rule: cents = floor(Wh * cents per kWh / 1000).
    function _amount(uint256 energyWh, uint256 priceCentsPerKwh) private pure returns (uint256) {
        return (energyWh * priceCentsPerKwh) / 1000;
    }

    /// Pays and refunds the book's orders from position `from` for their delivery; returns the
    /// cents paid and refunded. Per order: one cold read of the order, the consumer's refund
    /// credit when not all was delivered, and the producer's credit netted over consecutive orders.
    function _settleOrders(SlotBook storage book, uint256 from, bytes calldata deliveredWh)
        private
        returns (uint256 paid, uint256 refunded)
    {
        address producer;
        uint256 producerDue;
        uint256 n = deliveredWh.length / 4;
        for (uint256 i; i < n; ) {
            uint256 delivered;
            uint256 word;
            Order storage stored = book.orders[from + i];
            assembly ("memory-safe") {
                // The i-th 4-byte big-endian word (the length was checked to be 4 * n).
                delivered := shr(224, calldataload(add(deliveredWh.offset, mul(i, 4))))
                // The order's one slot, read once and unpacked below (no memory copy per order).
                word := sload(stored.slot)
            }
            uint256 energyWh = uint32(word >> 192);
            if (delivered > energyWh) revert DeliveryExceedsOrder(uint32(from + i), uint32(delivered), uint32(energyWh));
            unchecked {
                ++i;
                // Cancelled or reclaimed orders (0 Wh) are already refunded.
                if (energyWh == 0) continue;
                uint256 price = word >> 224;
                // Below 2**64: no overflow. pay <= escrow since delivered <= energyWh.
                uint256 pay = (delivered * price) / 1000;
                uint256 refund = (energyWh * price) / 1000 - pay;
                if (pay != 0) {
                    address orderProducer = _offers[uint32(word >> 160)].producer;
                    if (orderProducer != producer) {
                        if (producerDue != 0) _credit(producer, producerDue);
                        producer = orderProducer;
                        producerDue = 0;
                    }
                    producerDue += pay;
                    paid += pay;
                }
                if (refund != 0) {
                    _credit(address(uint160(word)), refund);
                    refunded += refund;
                }
            }
        }
        if (producerDue != 0) _credit(producer, producerDue);
    }

    /// Settled escrow becomes credit; one write of the totals slot.
    function _moveToCredit(uint256 cents, uint64 completedSlotStart) private {
        Totals memory totals = _totals;
        totals.escrowed -= uint96(cents);
        totals.credited += uint96(cents);
        if (completedSlotStart > totals.lastSettledSlotStart) totals.lastSettledSlotStart = completedSlotStart;
        _totals = totals;
    }

    function _release(address consumer, uint256 refund) private {
        _totals.escrowed -= uint96(refund);
        if (refund != 0) {
            _credit(consumer, refund);
            _totals.credited += uint96(refund);
        }
    }

    function _credit(address account, uint256 cents) private {
        uint256 current = _creditPlusOne[account];
        _creditPlusOne[account] = (current == 0 ? 1 : current) + cents;
    }

    function _openCreditAccount(address account) private {
        if (_creditPlusOne[account] == 0) _creditPlusOne[account] = 1;
    }

    function _requireGateOpen(uint64 slotStart) private view {
        uint64 gate = slotStart > gateClosureSeconds ? slotStart - gateClosureSeconds : 0;
        if (block.timestamp >= gate) revert GateClosed(slotStart, gate);
    }

    function _registerZone(bytes32 zone) private returns (uint32) {
        uint256 indexPlusOne = _zoneIndex[zone];
        if (indexPlusOne != 0) return uint32(indexPlusOne - 1);
        _zones.push(zone);
        uint32 index = uint32(_zones.length - 1);
        _zoneIndex[zone] = _zones.length;
        emit ZoneRegistered(zone, index);
        return index;
    }

    function _bookKey(uint32 zoneIndex, uint32 slot) private pure returns (uint64) {
        return (uint64(zoneIndex) << 32) | slot;
    }

    function _bookOf(bytes32 zone, uint64 slotStart) private view returns (SlotBook storage) {
        if (slotStart % SLOT_SECONDS != 0) revert SlotNotAligned(slotStart);
        uint256 zoneIndexPlusOne = _zoneIndex[zone];
        if (zoneIndexPlusOne == 0) revert UnknownZone(zone);
        return _books[_bookKey(uint32(zoneIndexPlusOne - 1), uint32(slotStart / SLOT_SECONDS))];
    }

    function _offerIndexOf(bytes32 offerId) private view returns (uint256) {
        uint256 indexPlusOne = _offerIndex[offerId];
        if (indexPlusOne == 0) revert UnknownOffer(offerId);
        return indexPlusOne - 1;
    }

    function _order(bytes32 orderId) private view returns (OrderRef memory ref, Order storage o) {
        ref = _orderRefs[orderId];
        if (!ref.exists) revert UnknownOrder(orderId);
        o = _books[ref.bookKey].orders[ref.position];
    }
}
