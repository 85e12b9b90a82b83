"""The market's ``/v1`` operations: who may call each, what it takes, what it answers.

Commands go through the service (checked against the market state, appended to market.events,
folded and projected before the answer); reads come from the read models. A participant sees its
own offers, orders, trades and balance; consumers browse the open offers of their zone without
learning who the producer is; the operator sees the whole market.

Each operation is declared with :func:`market_operation` on the API layer (``api.operation``):
the market roles it allows become its ``allow(...)``; the handler gets a :class:`MarketCall`, whose
``me`` is the market's view of the caller (participant = household, acting in the role the
operation needs), and a refused command (:class:`marketplace.commands.Rejected`) becomes the API
layer's 4xx naming the field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

import api
from marketplace import commands, queries, requests
from marketplace.api import views
from marketplace.commands import Principal, Rejected, Role, conflict, forbidden, not_found
from marketplace.readmodel import OfferRow, OrderRow, ParticipantRow, SlotRow, TradeRow, ZoneRow
from marketplace.state import MarketState

DESCRIPTION = (
    "A neighbourhood energy market: producers list the energy they will export in 15-minute slots, "
    "consumers of the same zone buy it (bilateral) or bid for it (pay-as-bid, pay-as-clear auctions), "
    "trading stops at each slot's gate closure, and after the slot the meters decide what was delivered. "
    "Energies in Wh, prices in euro cents per kWh, amounts in millicents (Wh x cents/kWh), times in Unix "
    "milliseconds UTC. Every refusal is a JSON body naming the field and the reason."
)

ANY: tuple[Role, ...] = ("producer", "consumer", "operator")
# A household with both market roles reads (offers, trades, slots, balance) as this one.
READS_AS: Role = "producer"


def market_principal(principal: api.Principal, roles: tuple[Role, ...]) -> Principal:
    """The market's view of a caller the operation allows: the operator, or the household (the
    participant) acting in the first of ``roles`` it holds."""
    participant = principal.household or principal.subject.removeprefix("market:")
    if "operator" in roles and "operator" in principal.roles:
        return Principal(principal.subject.removeprefix("market:"), "operator")
    held = [r for r in roles if r in principal.market_roles]
    role = READS_AS if len(held) > 1 and READS_AS in held else held[0]
    return Principal(participant, role)


@dataclass
class MarketCall:
    """What a market handler gets: who asks (as the market sees it), the validated parts, the service."""

    request: Request
    principal: Principal | None
    path: Any
    query: Any
    body: Any
    service: Any

    @property
    def me(self) -> Principal:
        assert self.principal is not None
        return self.principal


MarketHandler = Callable[[MarketCall], Awaitable[Any]]


def market_operation(method: str, path: str, *, roles: tuple[Role, ...] | None, **declaration: Any,
                     ) -> Callable[[MarketHandler], api.Operation]:
    """``api.operation`` for the market: ``roles`` None is public; else the market roles allowed."""

    def declare(handler: MarketHandler) -> api.Operation:
        body, path_params = declaration.get("body"), declaration.get("path_params")
        query = declaration.get("query", requests.NoQuery)

        async def serve(call: api.Call) -> Any:
            me = market_principal(call.principal, roles) if roles is not None and call.principal else None
            try:
                return await handler(MarketCall(call.request, me, call.path, call.query, call.body, call.state))
            except Rejected as exc:
                location = "body" if body and exc.field in body.model_fields else (
                    "path" if path_params and exc.field in path_params.model_fields else
                    "query" if exc.field in query.model_fields else None)
                raise api.ApiError(exc.status, exc.code, exc.reason, exc.field, location) from None

        serve.__name__ = handler.__name__
        allowed = api.allow(*roles) if roles is not None else api.allow("anonymous")
        return api.operation(method, path, allow=allowed, tags=(path.split("/")[2],), **declaration)(serve)

    return declare


def _participant(call: MarketCall) -> Any:
    """The registered participant behind a producer's or consumer's token."""
    return commands.member(call.service.state, call.me, call.me.role)


async def _read(fn: Any, *args: Any, **kwargs: Any) -> Any:
    # A read of the local SQLite file takes well under a millisecond, less than the hop to a worker
    # thread and back (bench.api): it runs in the event loop. A database across the network
    # (PostgreSQL) is read from a worker thread, never blocking the loop.
    if args and isinstance(args[0], Engine) and args[0].dialect.name == "sqlite":
        return fn(*args, **kwargs)
    return await run_in_threadpool(fn, *args, **kwargs)


def _offer_view(offer: Any, viewer: Principal) -> views.OfferView:
    view = views.OfferView.model_validate(offer)
    if not (viewer.is_operator or viewer.participant == offer.producer):
        view.producer = None  # a fresh view of its own: hiding the producer changes nothing else
    return view


# --- public -----------------------------------------------------------------------------------------


@market_operation("GET", "/v1/health", summary="Is the market up, and how far has it read its log", roles=None,
               response=views.HealthView)
async def health(call: MarketCall) -> views.HealthView:
    state: MarketState = call.service.state
    return views.HealthView(status="ok", positions={str(p): o for p, o in sorted(state.positions.items())})


# --- operator ---------------------------------------------------------------------------------------


@market_operation("PUT", "/v1/zones/{zone}", summary="Configure how a zone trades (operator)", roles=("operator",),
               path_params=requests.ZonePath, body=requests.ZoneConfig, response=views.ZoneView,
               description="Applies to slots that have no offer or order yet; open slots keep their rules.")
async def configure_zone(call: MarketCall) -> views.ZoneView:
    zone = call.path.zone
    await call.service.execute(zone, lambda s, now: commands.configure_zone(s, call.me, zone, call.body, now))
    return views.ZoneView.model_validate(call.service.state.zones[zone])


@market_operation("POST", "/v1/participants", summary="Register a producer, consumer or prosumer (operator)",
               roles=("operator",), body=requests.ParticipantRegistration, response=views.ParticipantView,
               status=201, errors=(409,))
async def register_participant(call: MarketCall) -> views.ParticipantView:
    body: requests.ParticipantRegistration = call.body
    await call.service.execute(body.zone, lambda s, now: commands.register_participant(s, call.me, body, now))
    return views.ParticipantView.model_validate(call.service.state.participants[body.participant])


@market_operation("GET", "/v1/participants", summary="List participants (operator)", roles=("operator",),
               query=requests.ParticipantQuery, response=views.ParticipantList)
async def list_participants(call: MarketCall) -> views.ParticipantList:
    q: requests.ParticipantQuery = call.query
    where = [ParticipantRow.zone == q.zone] if q.zone is not None else []
    rows = await _read(queries.find, call.service.read_model.engine, ParticipantRow, where,
                       [ParticipantRow.participant], q.limit, q.offset)
    return views.ParticipantList(items=[views.ParticipantView.model_validate(r) for r in rows])


@market_operation("GET", "/v1/participants/{participant}", summary="One participant (operator, or itself)", roles=ANY,
               path_params=requests.ParticipantPath, response=views.ParticipantView, errors=(404,))
async def get_participant(call: MarketCall) -> views.ParticipantView:
    wanted = call.path.participant
    if not call.me.is_operator and wanted != call.me.participant:
        raise not_found("participant", f"no participant {wanted!r} you may see")
    found = await _read(queries.get, call.service.read_model.engine, ParticipantRow, wanted)
    if found is None:
        raise not_found("participant", f"no participant {wanted!r}")
    return views.ParticipantView.model_validate(found)


@market_operation("POST", "/v1/participants/{participant}/tokens", summary="Issue a bearer token (operator)",
               roles=("operator",), path_params=requests.ParticipantPath, body=requests.TokenRequest,
               response=views.TokenView, status=201, errors=(409,),
               description="The token is shown once; only its hash is stored.")
async def issue_token(call: MarketCall) -> views.TokenView:
    participant, role = call.path.participant, call.body.role
    if role != "operator":
        registered = call.service.state.participants.get(participant)
        if registered is None or not registered.has_role(role):
            raise conflict("role", f"participant {participant!r} is not registered as a {role}")
    token = await _read(call.service.tokens.issue, participant, role, call.service.clock.now_ms())
    return views.TokenView(participant=participant, role=role, token=token)


# --- everyone with a token --------------------------------------------------------------------------


# /v1/me is the account's (accounts surface); the market's view of the caller has its own path.
@market_operation("GET", "/v1/market/me", summary="Who this credential speaks for in the market", roles=ANY,
                  response=views.MeView)
async def market_me(call: MarketCall) -> views.MeView:
    registered = call.service.state.participants.get(call.me.participant)
    return views.MeView(participant=call.me.participant, role=call.me.role,
                        registered=views.ParticipantView.model_validate(registered) if registered else None)


@market_operation("GET", "/v1/zones", summary="Every zone and how it trades", roles=ANY, query=requests.Page,
               response=views.ZoneList)
async def list_zones(call: MarketCall) -> views.ZoneList:
    rows = await _read(queries.find, call.service.read_model.engine, ZoneRow, [], [ZoneRow.zone],
                       call.query.limit, call.query.offset)
    return views.ZoneList(items=[views.ZoneView.model_validate(r) for r in rows])


@market_operation("GET", "/v1/zones/{zone}", summary="How one zone trades", roles=ANY, path_params=requests.ZonePath,
               response=views.ZoneView, errors=(404,))
async def get_zone(call: MarketCall) -> views.ZoneView:
    found = await _read(queries.get, call.service.read_model.engine, ZoneRow, call.path.zone)
    if found is None:
        raise not_found("zone", f"no zone {call.path.zone!r}")
    return views.ZoneView.model_validate(found)


# --- offers -----------------------------------------------------------------------------------------


@market_operation("POST", "/v1/offers", summary="List energy for sale in one slot or a window of slots (producer)",
               roles=("producer",), body=requests.OfferListing, response=views.OfferList, status=201,
               errors=(403, 409),
               description="One offer per 15-minute slot of the window, all or none. Each slot's total offered "
                           "energy is capped by what the installation's peak power produces in 15 minutes.")
async def list_offers(call: MarketCall) -> views.OfferList:
    producer = _participant(call)
    events = await call.service.execute(producer.zone, lambda s, now: commands.list_offers(s, call.me, call.body, now))
    offers = call.service.state.offers
    return views.OfferList(items=[views.OfferView.model_validate(offers[e.offer_id]) for e in events])


@market_operation("GET", "/v1/offers", summary="Offers: a producer's own, a consumer's zone's open ones, or all (operator)",
               roles=ANY, query=requests.OfferQuery, response=views.OfferList)
async def browse_offers(call: MarketCall) -> views.OfferList:
    q: requests.OfferQuery = call.query
    where: list[ColumnElement[bool]] = []
    if call.me.role == "producer":
        where.append(OfferRow.producer == _participant(call).participant)
    elif call.me.role == "consumer":
        consumer = _participant(call)
        if q.zone is not None and q.zone != consumer.zone:
            raise forbidden(f"you trade in zone {consumer.zone!r}; offers of other zones are not yours to see")
        where += [OfferRow.zone == consumer.zone, OfferRow.status == "open", OfferRow.energy_wh > OfferRow.sold_wh]
    if q.zone is not None:
        where.append(OfferRow.zone == q.zone)
    if q.slot_start_ms is not None:
        where.append(OfferRow.slot_start_ms == q.slot_start_ms)
    if q.status is not None:
        where.append(OfferRow.status == q.status)
    rows = await _read(queries.find, call.service.read_model.engine, OfferRow, where,
                       [OfferRow.slot_start_ms, OfferRow.price_cents_per_kwh, OfferRow.seq], q.limit, q.offset)
    return views.OfferList(items=[_offer_view(r, call.me) for r in rows])


@market_operation("GET", "/v1/offers/{offer_id}", summary="One offer", roles=ANY, path_params=requests.OfferPath,
               response=views.OfferView, errors=(404,))
async def get_offer(call: MarketCall) -> views.OfferView:
    offer_id = call.path.offer_id
    found = await _read(queries.get, call.service.read_model.engine, OfferRow, offer_id)
    visible = found is not None and (
        call.me.is_operator
        or (call.me.role == "producer" and found.producer == call.me.participant)
        or (call.me.role == "consumer" and found.zone == _participant(call).zone and found.status != "withdrawn")
    )
    if not visible:
        raise not_found("offer_id", f"no offer {offer_id!r} you may see")
    return _offer_view(found, call.me)


@market_operation("PATCH", "/v1/offers/{offer_id}", summary="Amend an open offer before gate closure (producer)",
               roles=("producer",), path_params=requests.OfferPath, body=requests.OfferAmendment,
               response=views.OfferView, errors=(404, 409),
               description="Energy cannot go below what is already sold. The amended offer loses its time priority.")
async def amend_offer(call: MarketCall) -> views.OfferView:
    offer_id = call.path.offer_id
    offer = call.service.state.offers.get(offer_id)
    await call.service.execute(offer.zone if offer else None,
                               lambda s, now: commands.amend_offer(s, call.me, offer_id, call.body, now))
    return views.OfferView.model_validate(call.service.state.offers[offer_id])


@market_operation("DELETE", "/v1/offers/{offer_id}", summary="Withdraw the unsold part of an offer before gate closure (producer)",
               roles=("producer",), path_params=requests.OfferPath, response=views.OfferView, errors=(404, 409))
async def withdraw_offer(call: MarketCall) -> views.OfferView:
    offer_id = call.path.offer_id
    offer = call.service.state.offers.get(offer_id)
    await call.service.execute(offer.zone if offer else None,
                               lambda s, now: commands.withdraw_offer(s, call.me, offer_id, now))
    return views.OfferView.model_validate(call.service.state.offers[offer_id])


# --- orders -----------------------------------------------------------------------------------------


@market_operation("POST", "/v1/orders", summary="Buy all or part of an offer, at its price (consumer, bilateral zones)",
               roles=("consumer",), body=requests.Purchase, response=views.OrderView, status=201,
               errors=(403, 404, 409))
async def buy(call: MarketCall) -> views.OrderView:
    consumer = _participant(call)
    events = await call.service.execute(consumer.zone, lambda s, now: commands.purchase(s, call.me, call.body, now))
    return views.OrderView.model_validate(call.service.state.orders[events[0].order_id])


@market_operation("POST", "/v1/bids", summary="Bid in a slot's auction (consumer, pay-as-bid and pay-as-clear zones)",
               roles=("consumer",), body=requests.BidRequest, response=views.OrderView, status=201,
               errors=(403, 409))
async def bid(call: MarketCall) -> views.OrderView:
    consumer = _participant(call)
    events = await call.service.execute(consumer.zone, lambda s, now: commands.place_bid(s, call.me, call.body, now))
    return views.OrderView.model_validate(call.service.state.orders[events[0].order_id])


@market_operation("GET", "/v1/orders", summary="A consumer's orders and bids, or all (operator)",
               roles=("consumer", "operator"), query=requests.OrderQuery, response=views.OrderList)
async def list_orders(call: MarketCall) -> views.OrderList:
    q: requests.OrderQuery = call.query
    where: list[ColumnElement[bool]] = []
    if not call.me.is_operator:
        where.append(OrderRow.consumer == _participant(call).participant)
    if q.zone is not None:
        where.append(OrderRow.zone == q.zone)
    if q.slot_start_ms is not None:
        where.append(OrderRow.slot_start_ms == q.slot_start_ms)
    if q.status is not None:
        where.append(OrderRow.status == q.status)
    rows = await _read(queries.find, call.service.read_model.engine, OrderRow, where,
                       [OrderRow.slot_start_ms, OrderRow.zone, OrderRow.seq], q.limit, q.offset)
    return views.OrderList(items=[views.OrderView.model_validate(r) for r in rows])


@market_operation("GET", "/v1/orders/{order_id}", summary="One order", roles=("consumer", "operator"),
               path_params=requests.OrderPath, response=views.OrderView, errors=(404,))
async def get_order(call: MarketCall) -> views.OrderView:
    order_id = call.path.order_id
    found = await _read(queries.get, call.service.read_model.engine, OrderRow, order_id)
    if found is None or not (call.me.is_operator or found.consumer == _participant(call).participant):
        raise not_found("order_id", f"no order {order_id!r} of yours")
    return views.OrderView.model_validate(found)


@market_operation("DELETE", "/v1/orders/{order_id}", summary="Cancel an open bid before gate closure (consumer)",
               roles=("consumer",), path_params=requests.OrderPath, response=views.OrderView, errors=(404, 409))
async def cancel_order(call: MarketCall) -> views.OrderView:
    order_id = call.path.order_id
    order = call.service.state.orders.get(order_id)
    await call.service.execute(order.zone if order else None,
                               lambda s, now: commands.cancel_order(s, call.me, order_id, now))
    return views.OrderView.model_validate(call.service.state.orders[order_id])


# --- after trading ------------------------------------------------------------------------------------


@market_operation("GET", "/v1/trades", summary="Trades: what was bought or sold, delivered and paid",
               roles=ANY, query=requests.TradeQuery, response=views.TradeList,
               description="A producer sees its sales, a consumer its purchases, the operator every trade.")
async def list_trades(call: MarketCall) -> views.TradeList:
    q: requests.TradeQuery = call.query
    where: list[ColumnElement[bool]] = []
    if call.me.role == "producer":
        where.append(TradeRow.producer == _participant(call).participant)
    elif call.me.role == "consumer":
        where.append(TradeRow.consumer == _participant(call).participant)
    if q.zone is not None:
        where.append(TradeRow.zone == q.zone)
    if q.slot_start_ms is not None:
        where.append(TradeRow.slot_start_ms == q.slot_start_ms)
    rows = await _read(queries.find, call.service.read_model.engine, TradeRow, where,
                       [TradeRow.slot_start_ms, TradeRow.trade_id], q.limit, q.offset)
    return views.TradeList(items=[views.TradeView.model_validate(r) for r in rows])


@market_operation("GET", "/v1/slots", summary="Slots: gate closure, clearing price, volume, settlement",
               roles=ANY, query=requests.SlotQuery, response=views.SlotList, errors=(403,),
               description="Participants see their zone's slots; the operator every zone's.")
async def list_slots(call: MarketCall) -> views.SlotList:
    q: requests.SlotQuery = call.query
    where: list[ColumnElement[bool]] = []
    if not call.me.is_operator:
        zone = _participant(call).zone
        if q.zone is not None and q.zone != zone:
            raise forbidden(f"you trade in zone {zone!r}; other zones are the operator's to see")
        where.append(SlotRow.zone == zone)
    if q.zone is not None:
        where.append(SlotRow.zone == q.zone)
    if q.status is not None:
        where.append(SlotRow.status == q.status)
    rows = await _read(queries.find, call.service.read_model.engine, SlotRow, where,
                       [SlotRow.slot_start_ms, SlotRow.zone], q.limit, q.offset)
    return views.SlotList(items=[views.SlotView.model_validate(r) for r in rows])


@market_operation("GET", "/v1/slots/{zone}/{slot_start_ms}", summary="One slot of a zone", roles=ANY,
               path_params=requests.SlotPath, response=views.SlotView, errors=(404,))
async def get_slot(call: MarketCall) -> views.SlotView:
    zone, start = call.path.zone, call.path.slot_start_ms
    if not call.me.is_operator and _participant(call).zone != zone:
        raise not_found("zone", f"no slot {start} of zone {zone!r} you may see")
    found = await _read(queries.get, call.service.read_model.engine, SlotRow, (zone, start))
    if found is None:
        raise not_found("slot_start_ms", f"zone {zone!r} has no slot {start} with offers or orders")
    return views.SlotView.model_validate(found)


@market_operation("GET", "/v1/balance", summary="Energy and money bought and sold: contracted, delivered, settled",
               roles=ANY, query=requests.BalanceQuery, response=views.BalanceView, errors=(403,))
async def balance(call: MarketCall) -> views.BalanceView:
    if call.me.is_operator:
        if call.query.participant is None:
            raise commands.invalid("participant", "the operator names whose balance to show")
        whose = call.query.participant
    else:
        if call.query.participant not in (None, call.me.participant):
            raise forbidden("a participant sees only its own balance")
        whose = _participant(call).participant
    sides = await _read(queries.balance, call.service.read_model.engine, whose)
    bought, sold = views.SideBalance(**sides["bought"]), views.SideBalance(**sides["sold"])
    return views.BalanceView(participant=whose, bought=bought, sold=sold,
                             net_millicents=sold.delivered_millicents - bought.delivered_millicents)


#: Every market operation, in the order the document lists them.
OPERATIONS: list[api.Operation] = [
    health, configure_zone, register_participant, list_participants, get_participant, issue_token, market_me,
    list_zones, get_zone, list_offers, browse_offers, get_offer, amend_offer, withdraw_offer, buy, bid,
    list_orders, get_order, cancel_order, list_trades, list_slots, get_slot, balance,
]
