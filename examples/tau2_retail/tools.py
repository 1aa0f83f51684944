"""The retail store's tools over a ``RetailState``, as Warden tools.

Names and arguments are τ²-bench's (the gold actions call them); the implementation is
ours, from the policy and the shape of the data. Like the store's real API, each write
checks what it must to keep the database consistent (the order exists, the items are in
it, a gift card can pay) and refuses with ``ToolError(effect=False)`` before changing
anything; the rules a human agent is trusted to follow — whose order it is, which
statuses allow what, where refunds may go — are the workflow's policies, decided before
the tool runs.

Two tools exist for the gateway's facts only (``call_subject``, ``lookup_items``); the
workflow's task type does not let the agent call them.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from examples.tau2_retail.store import RetailState, cents
from warden import ToolError, tool

__all__ = [
    "CANCEL_REASONS",
    "READ_TOOLS",
    "WRITE_TOOLS",
    "ItemInfo",
    "Order",
    "Product",
    "Subject",
    "User",
    "default_tools",
    "make_tools",
]

CANCEL_REASONS = ("no longer needed", "ordered by mistake")
READ_TOOLS = (
    "find_user_id_by_email",
    "find_user_id_by_name_zip",
    "get_user_details",
    "get_order_details",
    "get_product_details",
    "get_item_details",
    "list_all_product_types",
    "calculate",
)
WRITE_TOOLS = (
    "cancel_pending_order",
    "modify_pending_order_address",
    "modify_pending_order_items",
    "modify_pending_order_payment",
    "modify_user_address",
    "return_delivered_order_items",
    "exchange_delivered_order_items",
)


class Address(BaseModel):
    address1: str
    address2: str
    city: str
    country: str
    state: str
    zip: str


class Name(BaseModel):
    first_name: str
    last_name: str


class PaymentMethod(BaseModel):
    source: str
    id: str
    balance: float | None = None
    brand: str | None = None
    last_four: str | None = None


class User(BaseModel):
    user_id: str
    name: Name
    address: Address
    email: str
    payment_methods: dict[str, PaymentMethod]
    orders: list[str]


class OrderItem(BaseModel):
    name: str
    product_id: str
    item_id: str
    price: float
    options: dict[str, str]


class Fulfillment(BaseModel):
    tracking_id: list[str]
    item_ids: list[str]


class Payment(BaseModel):
    transaction_type: str
    amount: float
    payment_method_id: str


class Order(BaseModel):
    order_id: str
    user_id: str
    address: Address
    items: list[OrderItem]
    status: str
    fulfillments: list[Fulfillment]
    payment_history: list[Payment]
    cancel_reason: str | None = None
    return_items: list[str] | None = None
    return_payment_method_id: str | None = None
    exchange_items: list[str] | None = None
    exchange_new_items: list[str] | None = None
    exchange_payment_method_id: str | None = None
    exchange_price_difference: float | None = None


class Variant(BaseModel):
    item_id: str
    options: dict[str, str]
    available: bool
    price: float


class Product(BaseModel):
    name: str
    product_id: str
    variants: dict[str, Variant]


class ItemInfo(BaseModel):
    """An item id as the catalogue knows it (``found`` false: no such item)."""

    item_id: str
    found: bool
    product_id: str
    price: float
    available: bool


class Subject(BaseModel):
    """The user a call is about, as the database says ("" when it names nobody known)."""

    user_id: str


def _refuse(message: str) -> ToolError:
    # Every refusal below comes before the first change: nothing happened.
    return ToolError(message, effect=False)


_OPS: dict[type[ast.AST], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _arith(node: ast.AST) -> Decimal:
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return Decimal(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _arith(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        result: Decimal = _OPS[type(node.op)](_arith(node.left), _arith(node.right))
        return result
    raise ValueError("only numbers, + - * / and parentheses")


def make_tools(state: RetailState) -> list[Any]:
    """The tools bound to ``state`` (pass to ``Gateway(..., tools=...)``)."""
    # The address tools take a parameter named ``state`` (τ²'s argument name).
    store = state

    def order_of(order_id: str) -> dict[str, Any]:
        found = state.get("orders", order_id)
        if found is None:
            raise _refuse(f"order {order_id} not found")
        return found

    def user_of(user_id: str) -> dict[str, Any]:
        found = state.get("users", user_id)
        if found is None:
            raise _refuse(f"user {user_id} not found")
        return found

    def method_of(user_id: str, payment_method_id: str) -> dict[str, Any]:
        method: dict[str, Any] | None = user_of(user_id)["payment_methods"].get(payment_method_id)
        if method is None:
            raise _refuse(f"payment method {payment_method_id} not found")
        return method

    def check_items(order: dict[str, Any], item_ids: list[str]) -> None:
        held = [i["item_id"] for i in order["items"]]
        for item_id in set(item_ids):
            if item_ids.count(item_id) > held.count(item_id):
                raise _refuse(
                    f"item {item_id} not found in order {order['order_id']} (or not that many)"
                )

    def item_change(
        order: dict[str, Any], item_ids: list[str], new_item_ids: list[str]
    ) -> tuple[Decimal, list[dict[str, Any]]]:
        """The price difference and the new variants, or a refusal."""
        check_items(order, item_ids)
        if len(item_ids) != len(new_item_ids):
            raise _refuse("the number of items to change and of new items must match")
        diff = Decimal(0)
        variants: list[dict[str, Any]] = []
        for item_id, new_id in zip(item_ids, new_item_ids, strict=True):
            if item_id == new_id:
                raise _refuse(f"new item {new_id} is the item it replaces")
            old = next(i for i in order["items"] if i["item_id"] == item_id)
            product = state.get("products", old["product_id"])
            variant = None if product is None else product["variants"].get(new_id)
            if variant is None or not variant["available"]:
                raise _refuse(f"new item {new_id} is not an available variant of {old['name']}")
            diff += cents(variant["price"]) - cents(old["price"])
            variants.append(variant)
        return diff, variants

    def pays(method: dict[str, Any], amount: Decimal) -> None:
        if method["source"] == "gift_card" and cents(method["balance"]) < amount:
            raise _refuse("insufficient gift card balance")

    def credit(user_id: str, payment_method_id: str, amount: Decimal) -> None:
        """Add ``amount`` (negative: take it) to a gift card; other methods hold no balance."""
        method = state.writable("users", user_id)["payment_methods"][payment_method_id]
        if method["source"] == "gift_card":
            method["balance"] = float(cents(method["balance"]) + amount)

    # -- reads ------------------------------------------------------------------------

    @tool(effect="read")
    def find_user_id_by_email(email: str) -> str:
        """The user id of the user with this email."""
        user_id = state.user_by_email(email)
        if user_id is None:
            raise _refuse("user not found")
        return user_id

    @tool(effect="read")
    def find_user_id_by_name_zip(first_name: str, last_name: str, zip: str) -> str:
        """The user id of the user with this first name, last name and zip code."""
        user_id = state.user_by_name_zip(first_name, last_name, zip)
        if user_id is None:
            raise _refuse("user not found")
        return user_id

    @tool(effect="read")
    def get_user_details(user_id: str) -> User:
        """A user's profile: name, address, email, payment methods, order ids."""
        return User.model_validate(user_of(user_id))

    @tool(effect="read")
    def get_order_details(order_id: str) -> Order:
        """An order: status, items, fulfilments, payment history."""
        return Order.model_validate(order_of(order_id))

    @tool(effect="read")
    def get_product_details(product_id: str) -> Product:
        """A product type and its variants (item ids, options, availability, price)."""
        product = state.get("products", product_id)
        if product is None:
            raise _refuse(f"product {product_id} not found")
        return Product.model_validate(product)

    @tool(effect="read")
    def get_item_details(item_id: str) -> Variant:
        """One variant item by its item id."""
        product_id = state.product_of_item(item_id)
        product = None if product_id is None else state.get("products", product_id)
        if product is None:
            raise _refuse(f"item {item_id} not found")
        return Variant.model_validate(product["variants"][item_id])

    @tool(effect="read")
    def list_all_product_types() -> dict[str, str]:
        """Product name -> product id, for the 50 product types."""
        products = (p for p in (state.get("products", k) for k in state.ids("products")) if p)
        return {p["name"]: p["product_id"] for p in sorted(products, key=lambda p: p["name"])}

    @tool(effect="read")
    def calculate(expression: str) -> float:
        """The value of an arithmetic expression (numbers, + - * /, parentheses), to cents."""
        try:
            value = _arith(ast.parse(expression, mode="eval"))
        except (SyntaxError, ValueError, ArithmeticError) as exc:
            raise _refuse(f"cannot calculate {expression!r}: {exc}") from exc
        return float(cents(value))

    @tool(effect="read")
    def call_subject(tool: str, arguments: dict[str, Any]) -> Subject:
        """Fact for the identity rules: the user a call of ``tool`` with ``arguments`` is about."""
        user_id: str | None = None
        if tool == "find_user_id_by_email":
            user_id = state.user_by_email(str(arguments.get("email", "")))
        elif tool == "find_user_id_by_name_zip":
            user_id = state.user_by_name_zip(
                str(arguments.get("first_name", "")),
                str(arguments.get("last_name", "")),
                str(arguments.get("zip", "")),
            )
        elif "order_id" in arguments:
            order = state.get("orders", str(arguments["order_id"]))
            user_id = None if order is None else order["user_id"]
        elif "user_id" in arguments:
            user = state.get("users", str(arguments["user_id"]))
            user_id = None if user is None else user["user_id"]
        return Subject(user_id=user_id or "")

    @tool(effect="read")
    def lookup_items(item_ids: list[str]) -> list[ItemInfo]:
        """Fact for the item rules: each item id's product, price and availability."""
        out: list[ItemInfo] = []
        for item_id in item_ids:
            product_id = state.product_of_item(item_id)
            product = None if product_id is None else state.get("products", product_id)
            if product is None:
                out.append(
                    ItemInfo(
                        item_id=item_id, found=False, product_id="", price=0.0, available=False
                    )
                )
                continue
            variant = product["variants"][item_id]
            out.append(
                ItemInfo(
                    item_id=item_id,
                    found=True,
                    product_id=product["product_id"],
                    price=variant["price"],
                    available=variant["available"],
                )
            )
        return out

    # -- writes -----------------------------------------------------------------------

    @tool(effect="money")
    def cancel_pending_order(order_id: str, reason: str) -> Order:
        """Cancel a pending order; its payments are refunded to where they came from."""
        order = order_of(order_id)
        if order["status"] != "pending":
            raise _refuse(f"order {order_id} is {order['status']}, not pending")
        if reason not in CANCEL_REASONS:
            raise _refuse(f"reason must be one of {', '.join(CANCEL_REASONS)}")
        payments = [p for p in order["payment_history"] if p["transaction_type"] == "payment"]
        order = state.writable("orders", order_id)
        for payment in payments:
            order["payment_history"].append(
                {
                    "transaction_type": "refund",
                    "amount": payment["amount"],
                    "payment_method_id": payment["payment_method_id"],
                }
            )
            credit(order["user_id"], payment["payment_method_id"], cents(payment["amount"]))
        order["status"] = "cancelled"
        order["cancel_reason"] = reason
        return Order.model_validate(order)

    @tool(effect="write")
    def modify_pending_order_address(
        order_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
    ) -> Order:
        """Change the shipping address of a pending order."""
        if order_of(order_id)["status"] != "pending":
            raise _refuse(f"order {order_id} is not pending")
        address = {
            "address1": address1,
            "address2": address2,
            "city": city,
            "state": state,
            "country": country,
            "zip": zip,
        }
        order = store.writable("orders", order_id)
        order["address"] = address
        return Order.model_validate(order)

    @tool(effect="money")
    def modify_pending_order_items(
        order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
    ) -> Order:
        """Swap items of a pending order for other variants of the same products, once."""
        order = order_of(order_id)
        if order["status"] != "pending":
            raise _refuse(f"order {order_id} is {order['status']}, not pending")
        diff, variants = item_change(order, item_ids, new_item_ids)
        method = method_of(order["user_id"], payment_method_id)
        pays(method, diff)
        order = state.writable("orders", order_id)
        order["payment_history"].append(
            {
                "transaction_type": "payment" if diff > 0 else "refund",
                "amount": float(abs(diff)),
                "payment_method_id": payment_method_id,
            }
        )
        credit(order["user_id"], payment_method_id, -diff)
        for item_id, variant in zip(item_ids, variants, strict=True):
            item = next(i for i in order["items"] if i["item_id"] == item_id)
            item["item_id"] = variant["item_id"]
            item["price"] = variant["price"]
            item["options"] = variant["options"]
        order["status"] = "pending (item modified)"
        return Order.model_validate(order)

    @tool(effect="money")
    def modify_pending_order_payment(order_id: str, payment_method_id: str) -> Order:
        """Pay a pending order with another of the user's payment methods."""
        order = order_of(order_id)
        if order["status"] != "pending":
            raise _refuse(f"order {order_id} is not pending")
        history = order["payment_history"]
        if len(history) != 1 or history[0]["transaction_type"] != "payment":
            raise _refuse("a pending order has exactly one payment")
        old_id = history[0]["payment_method_id"]
        if old_id == payment_method_id:
            raise _refuse("the new payment method is the current one")
        method = method_of(order["user_id"], payment_method_id)
        amount = cents(history[0]["amount"])
        pays(method, amount)
        order = state.writable("orders", order_id)
        order["payment_history"].extend(
            [
                {
                    "transaction_type": "payment",
                    "amount": float(amount),
                    "payment_method_id": payment_method_id,
                },
                {
                    "transaction_type": "refund",
                    "amount": float(amount),
                    "payment_method_id": old_id,
                },
            ]
        )
        credit(order["user_id"], payment_method_id, -amount)
        credit(order["user_id"], old_id, amount)
        return Order.model_validate(order)

    @tool(effect="write")
    def modify_user_address(
        user_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
    ) -> User:
        """Change a user's default address."""
        user_of(user_id)
        user = store.writable("users", user_id)
        user["address"] = {
            "address1": address1,
            "address2": address2,
            "city": city,
            "state": state,
            "country": country,
            "zip": zip,
        }
        return User.model_validate(user)

    @tool(effect="money")
    def return_delivered_order_items(
        order_id: str, item_ids: list[str], payment_method_id: str
    ) -> Order:
        """Ask to return items of a delivered order; the refund goes to ``payment_method_id``."""
        order = order_of(order_id)
        if order["status"] != "delivered":
            raise _refuse(f"order {order_id} is {order['status']}, not delivered")
        method = method_of(order["user_id"], payment_method_id)
        original = order["payment_history"][0]["payment_method_id"]
        if method["source"] != "gift_card" and payment_method_id != original:
            raise _refuse("the refund goes to the original payment method or a gift card")
        check_items(order, item_ids)
        order = state.writable("orders", order_id)
        order["status"] = "return requested"
        order["return_items"] = sorted(item_ids)
        order["return_payment_method_id"] = payment_method_id
        return Order.model_validate(order)

    @tool(effect="money")
    def exchange_delivered_order_items(
        order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
    ) -> Order:
        """Ask to exchange items of a delivered order for other variants of the same products."""
        order = order_of(order_id)
        if order["status"] != "delivered":
            raise _refuse(f"order {order_id} is {order['status']}, not delivered")
        diff, _ = item_change(order, item_ids, new_item_ids)
        pays(method_of(order["user_id"], payment_method_id), diff)
        order = state.writable("orders", order_id)
        order["status"] = "exchange requested"
        order["exchange_items"] = sorted(item_ids)
        order["exchange_new_items"] = sorted(new_item_ids)
        order["exchange_payment_method_id"] = payment_method_id
        order["exchange_price_difference"] = float(diff)
        return Order.model_validate(order)

    @tool(effect="write", idempotent=True)
    def transfer_to_human_agents(summary: str) -> str:
        """Hand the conversation to a human agent, with a summary of the user's issue."""
        return "Transfer successful"

    return [
        find_user_id_by_email,
        find_user_id_by_name_zip,
        get_user_details,
        get_order_details,
        get_product_details,
        get_item_details,
        list_all_product_types,
        calculate,
        call_subject,
        lookup_items,
        cancel_pending_order,
        modify_pending_order_address,
        modify_pending_order_items,
        modify_pending_order_payment,
        modify_user_address,
        return_delivered_order_items,
        exchange_delivered_order_items,
        transfer_to_human_agents,
    ]


def default_tools() -> list[Any]:
    """Tool factory for the CLI (``warden validate|serve --tools
    examples.tau2_retail.tools:default_tools``): the tools over the data of ``data_dir()``."""
    from examples.tau2_retail.data import load  # data imports the store, not the tools

    return load().state().tools()
