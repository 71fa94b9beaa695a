"""Customer-support tools of the retail domain. Results are compact: the responder is a small model."""

from __future__ import annotations

from typing import Any

from magv.domains.retail.data import CANCEL_REASONS, NOW, PRODUCTS
from magv.domains.sql import compact, one, rows
from magv.domains.tools import GROUNDED, ToolError, tool

CATEGORIES = sorted({p[1] for p in PRODUCTS})
ORDER_STATUSES = ["pending", "processed", "shipped", "delivered", "cancelled", "returned"]


def _text(description: str, max_length: int = 200, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, "minLength": 1, "maxLength": max_length, **extra}


# Ids are grounded (magv.llm.grounding): the model copies them from the question or a result.
# A tracking number is 12-22 capitals and digits with at least one digit (UPS, FedEx, USPS): one
# branch per count of capitals before the first digit, as RE2 (grounded patterns) has no lookahead.
TRACKING_NUMBER = (
    r"\b(?:" + "|".join(f"[A-Z]{{{k}}}[0-9][0-9A-Z]{{{max(0, 11 - k)},{21 - k}}}" for k in range(22)) + r")\b"
)
CUSTOMER_ID = _text("Customer id, e.g. C00042.", 20, **{GROUNDED: r"\bC\d{5}\b"})
ORDER_ID = _text("Order id, e.g. W1000123 (a leading # is fine).", 20, **{GROUNDED: r"\bW\d{7}\b"})
PAYMENT_ID = _text(
    "Payment method id from the customer's details, e.g. pm_00042.", 20, **{GROUNDED: r"\bpm_\d{5}\b"}
)
ITEM_IDS = {
    "type": "array",
    "items": _text("Item id from the order details, e.g. W1000123-1.", 30, **{GROUNDED: r"\bW\d{7}-\d+\b"}),
    "minItems": 1,
    "maxItems": 10,
    "uniqueItems": True,
}


def _order_id(value: str) -> str:
    return value.strip().lstrip("#").upper()


def _address(row: dict[str, Any]) -> dict[str, Any]:
    return compact({k: row.get(k) for k in ("address1", "address2", "city", "state", "zip", "country")})


def _customer(db, customer_id: str) -> dict[str, Any]:
    found = one(db, "SELECT * FROM customers WHERE customer_id = ?", [customer_id.strip().upper()])
    if found is None:
        raise ToolError(f"no customer with id {customer_id!r}")
    return found


def _order(db, order_id: str) -> dict[str, Any]:
    found = one(db, "SELECT * FROM orders WHERE order_id = ?", [_order_id(order_id)])
    if found is None:
        raise ToolError(f"no order with id {order_id!r}")
    return found


def _payment(row: dict[str, Any]) -> dict[str, Any]:
    shown = {"payment_method_id": row["payment_method_id"], "kind": row["kind"]}
    if row["kind"] == "credit_card":
        shown.update(brand=row["brand"], last4=row["last4"])
    elif row["kind"] == "gift_card":
        shown["balance"] = row["gift_card_balance"]
    return shown


@tool(
    "Find a customer by email address. Returns the customer id and name.", {"email": _text("Email address.")}
)
def find_customer_by_email(db, email: str) -> dict[str, Any]:
    found = one(
        db,
        "SELECT customer_id, first_name, last_name, email FROM customers WHERE lower(email) = lower(?)",
        [email.strip()],
    )
    if found is None:
        raise ToolError(f"no customer with email {email!r}")
    return found


@tool(
    "Find customers by first name, last name and zip code, when the customer does not know their email.",
    {
        "first_name": _text("First name.", 60),
        "last_name": _text("Last name.", 60),
        "zip": _text("5-digit zip code.", 10),
    },
)
def find_customer_by_name_zip(db, first_name: str, last_name: str, zip: str) -> dict[str, Any]:
    found = rows(
        db,
        "SELECT customer_id, first_name, last_name, email, city FROM customers "
        "WHERE lower(first_name) = lower(?) AND lower(last_name) = lower(?) AND zip = ? ORDER BY customer_id",
        [first_name.strip(), last_name.strip(), zip.strip()],
    )
    if not found:
        raise ToolError(f"no customer named {first_name} {last_name} with zip {zip}")
    return {"customers": found}


@tool(
    "Get a customer's profile: contact details, default address, payment methods and order ids.",
    {"customer_id": CUSTOMER_ID},
)
def get_customer_details(db, customer_id: str) -> dict[str, Any]:
    c = _customer(db, customer_id)
    payments = rows(
        db,
        "SELECT * FROM payment_methods WHERE customer_id = ? ORDER BY payment_method_id",
        [c["customer_id"]],
    )
    orders = rows(
        db, "SELECT order_id FROM orders WHERE customer_id = ? ORDER BY placed_at", [c["customer_id"]]
    )
    return {
        "customer_id": c["customer_id"],
        "name": f"{c['first_name']} {c['last_name']}",
        "email": c["email"],
        "phone": c["phone"],
        "address": _address(c),
        "payment_methods": [_payment(p) for p in payments],
        "order_ids": [o["order_id"] for o in orders],
    }


@tool(
    "List a customer's orders, newest first, optionally only those with one status.",
    {
        "customer_id": CUSTOMER_ID,
        "status": {"type": "string", "enum": ORDER_STATUSES, "description": "Only orders with this status."},
    },
    required=["customer_id"],
)
def list_customer_orders(db, customer_id: str, status: str | None = None) -> dict[str, Any]:
    c = _customer(db, customer_id)
    found = rows(
        db,
        "SELECT o.order_id, o.status, CAST(o.placed_at AS DATE) AS placed_on, o.total, count(i.item_id) AS items "
        "FROM orders o JOIN order_items i USING (order_id) WHERE o.customer_id = ? AND (? IS NULL OR o.status = ?) "
        "GROUP BY o.order_id, o.status, o.placed_at, o.total ORDER BY o.placed_at DESC",
        [c["customer_id"], status, status],
    )
    if not found:
        raise ToolError(f"customer {c['customer_id']} has no {status + ' ' if status else ''}orders")
    return {"customer_id": c["customer_id"], "orders": found}


@tool(
    "Get an order: status, items (with item ids), shipping address, payment method and shipment.",
    {"order_id": ORDER_ID},
)
def get_order_details(db, order_id: str) -> dict[str, Any]:
    o = _order(db, order_id)
    items = rows(
        db,
        "SELECT i.item_id, p.name AS product, i.product_id, i.variant_id, v.options, i.quantity, i.unit_price, i.status "
        "FROM order_items i JOIN products p USING (product_id) JOIN variants v USING (variant_id) "
        "WHERE i.order_id = ? ORDER BY i.item_id",
        [o["order_id"]],
    )
    shipment = one(
        db, "SELECT carrier, tracking_number, status, eta FROM shipments WHERE order_id = ?", [o["order_id"]]
    )
    returns = rows(
        db,
        "SELECT return_id, kind, item_ids, amount, status, CAST(created_at AS DATE) AS created_on FROM returns "
        "WHERE order_id = ? ORDER BY return_id",
        [o["order_id"]],
    )
    result = {
        "order_id": o["order_id"],
        "customer_id": o["customer_id"],
        "status": o["status"],
        "placed_at": o["placed_at"],
        "total": o["total"],
        "payment_method_id": o["payment_method_id"],
        "shipping_address": _address(o),
        "items": items,
        "shipment": shipment,
        "cancel_reason": o["cancel_reason"],
        "returns": [compact(r) for r in returns],
    }
    return compact(result)


@tool(
    "Get a product and all its variants (variant id, options, price, availability).",
    {"product_id": _text("Product id, e.g. P1012.", 20, **{GROUNDED: r"\bP\d{4}\b"})},
)
def get_product_details(db, product_id: str) -> dict[str, Any]:
    product = one(db, "SELECT * FROM products WHERE product_id = ?", [product_id.strip().upper()])
    if product is None:
        raise ToolError(f"no product with id {product_id!r}")
    variants = rows(
        db,
        "SELECT variant_id, options, price, available FROM variants WHERE product_id = ? ORDER BY variant_id",
        [product["product_id"]],
    )
    return {**product, "variants": variants}


@tool(
    "Search the catalogue by words in the product name or category. Returns matching products with their price range.",
    {
        "query": _text("Words to look for, e.g. 'hiking backpack'.", 100),
        "category": {"type": "string", "enum": CATEGORIES, "description": "Only this category."},
        "max_price": {
            "type": "number",
            "minimum": 0,
            "description": "Only products with a variant at or below this price.",
        },
    },
    required=["query"],
)
def search_products(
    db, query: str, category: str | None = None, max_price: float | None = None
) -> dict[str, Any]:
    catalogue = rows(
        db,
        "SELECT p.product_id, p.name, p.category, min(v.price) AS price_from, max(v.price) AS price_to, "
        "bool_or(v.available) AS in_stock FROM products p JOIN variants v USING (product_id) "
        "GROUP BY ALL ORDER BY p.product_id",
    )
    words = [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in query.lower().split()]

    def matches(p: dict[str, Any], need_all: bool) -> bool:
        text = f"{p['name']} {p['category']}".lower()
        hits = [w in text for w in words]
        return all(hits) if need_all else any(hits)

    pool = [
        p
        for p in catalogue
        if (category is None or p["category"] == category)
        and (max_price is None or p["price_from"] <= max_price)
    ]
    found = [p for p in pool if matches(p, True)] or [p for p in pool if matches(p, False)]
    if not found:
        raise ToolError(f"no products match {query!r}" + (f" in {category}" if category else ""))
    return {"products": found[:10]}


@tool(
    "Track a shipment by tracking number: carrier, status, expected delivery and scan events.",
    {"tracking_number": _text("Tracking number.", 40, **{GROUNDED: TRACKING_NUMBER})},
)
def track_shipment(db, tracking_number: str) -> dict[str, Any]:
    shipment = one(db, "SELECT * FROM shipments WHERE tracking_number = ?", [tracking_number.strip().upper()])
    if shipment is None:
        raise ToolError(f"no shipment with tracking number {tracking_number!r}")
    events = rows(
        db,
        "SELECT ts AS time, location, description FROM tracking_events WHERE tracking_number = ? ORDER BY ts",
        [shipment["tracking_number"]],
    )
    return {**compact(shipment), "events": events}


@tool(
    "Cancel an order that is still pending; the full amount is refunded to the original payment method.",
    {
        "order_id": ORDER_ID,
        "reason": {"type": "string", "enum": CANCEL_REASONS, "description": "Why the customer cancels."},
    },
    writes=True,
)
def cancel_pending_order(db, order_id: str, reason: str) -> dict[str, Any]:
    o = _order(db, order_id)
    if o["status"] != "pending":
        raise ToolError(f"order {o['order_id']} is {o['status']}; only pending orders can be cancelled")
    db.execute(
        "UPDATE orders SET status = 'cancelled', cancel_reason = ?, updated_at = ? WHERE order_id = ?",
        [reason, NOW, o["order_id"]],
    )
    _refund_gift_card(db, o["payment_method_id"], o["total"])
    return {
        "order_id": o["order_id"],
        "status": "cancelled",
        "refund": {"amount": o["total"], "payment_method_id": o["payment_method_id"]},
    }


def _refund_gift_card(db, payment_method_id: str, amount: float) -> None:
    # Card and PayPal refunds happen outside the shop; a gift card balance is ours to restore.
    db.execute(
        "UPDATE payment_methods SET gift_card_balance = gift_card_balance + ? WHERE payment_method_id = ? AND kind = 'gift_card'",
        [amount, payment_method_id],
    )


@tool(
    "Change the shipping address of a pending order.",
    {
        "order_id": ORDER_ID,
        "address1": _text("Street and number."),
        "address2": _text("Apartment, suite (optional).", 100),
        "city": _text("City.", 80),
        "state": {"type": "string", "pattern": "^[A-Z]{2}$", "description": "Two-letter state code."},
        "zip": {"type": "string", "pattern": "^[0-9]{5}$", "description": "5-digit zip code."},
    },
    required=["order_id", "address1", "city", "state", "zip"],
    writes=True,
)
def modify_pending_order_address(
    db, order_id: str, address1: str, city: str, state: str, zip: str, address2: str | None = None
) -> dict[str, Any]:
    o = _order(db, order_id)
    if o["status"] != "pending":
        raise ToolError(
            f"order {o['order_id']} is {o['status']}; only a pending order's address can be changed"
        )
    db.execute(
        "UPDATE orders SET address1 = ?, address2 = ?, city = ?, state = ?, zip = ?, updated_at = ? WHERE order_id = ?",
        [address1.strip(), address2, city.strip(), state, zip, NOW, o["order_id"]],
    )
    return {
        "order_id": o["order_id"],
        "status": o["status"],
        "shipping_address": _address(_order(db, o["order_id"])),
    }


def _delivered_items(db, order_id: str, item_ids: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    o = _order(db, order_id)
    if o["status"] != "delivered":
        raise ToolError(
            f"order {o['order_id']} is {o['status']}; only delivered orders can be returned or exchanged"
        )
    items = {
        i["item_id"]: i for i in rows(db, "SELECT * FROM order_items WHERE order_id = ?", [o["order_id"]])
    }
    chosen = []
    for item_id in item_ids:
        item = items.get(item_id.strip().upper())
        if item is None:
            raise ToolError(
                f"item {item_id!r} is not in order {o['order_id']}; its items are {', '.join(sorted(items))}"
            )
        if item["status"] != "ordered":
            raise ToolError(f"item {item['item_id']} is already {item['status']}")
        chosen.append(item)
    return o, chosen


def _own_payment(db, order: dict[str, Any], payment_method_id: str) -> dict[str, Any]:
    pm = one(db, "SELECT * FROM payment_methods WHERE payment_method_id = ?", [payment_method_id.strip()])
    if pm is None or pm["customer_id"] != order["customer_id"]:
        raise ToolError(f"payment method {payment_method_id!r} does not belong to the order's customer")
    if pm["payment_method_id"] != order["payment_method_id"] and pm["kind"] != "gift_card":
        raise ToolError("refunds go to the original payment method or one of the customer's gift cards")
    return pm


def _next_return_id(db) -> str:
    (count,) = db.execute("SELECT count(*) FROM returns").fetchone()
    return f"R{count + 1:05d}"


@tool(
    "Start a return of items of a delivered order; the refund goes to the original payment method or a gift card.",
    {"order_id": ORDER_ID, "item_ids": ITEM_IDS, "payment_method_id": PAYMENT_ID},
    writes=True,
)
def return_delivered_items(db, order_id: str, item_ids: list[str], payment_method_id: str) -> dict[str, Any]:
    o, items = _delivered_items(db, order_id, item_ids)
    pm = _own_payment(db, o, payment_method_id)
    amount = round(sum(i["quantity"] * i["unit_price"] for i in items), 2)
    return_id = _next_return_id(db)
    ids = [i["item_id"] for i in items]
    db.execute(
        "INSERT INTO returns VALUES (?, ?, 'return', ?, [], ?, ?, 'requested', ?)",
        [return_id, o["order_id"], ids, pm["payment_method_id"], amount, NOW],
    )
    db.execute("UPDATE order_items SET status = 'return_requested' WHERE list_contains(?, item_id)", [ids])
    db.execute(
        "UPDATE orders SET status = 'return_requested', updated_at = ? WHERE order_id = ?",
        [NOW, o["order_id"]],
    )
    return {
        "return_id": return_id,
        "order_id": o["order_id"],
        "item_ids": ids,
        "refund": {"amount": amount, "payment_method_id": pm["payment_method_id"]},
        "next_step": "A prepaid return label has been emailed; the refund is issued when the items arrive.",
    }


@tool(
    "Exchange items of a delivered order for other variants of the same products (e.g. another size); "
    "the price difference is charged or refunded.",
    {
        "order_id": ORDER_ID,
        "item_ids": ITEM_IDS,
        "new_variant_ids": {
            **ITEM_IDS,
            "uniqueItems": False,
            "items": _text("Variant id, e.g. P1012-03.", 20, **{GROUNDED: r"\bP\d{4}-\d{2}\b"}),
        },
        "payment_method_id": PAYMENT_ID,
    },
    writes=True,
)
def exchange_delivered_items(
    db, order_id: str, item_ids: list[str], new_variant_ids: list[str], payment_method_id: str
) -> dict[str, Any]:
    if len(item_ids) != len(new_variant_ids):
        raise ToolError("give one new variant id per item id, in the same order")
    o, items = _delivered_items(db, order_id, item_ids)
    pm = _own_payment(db, o, payment_method_id)
    difference = 0.0
    for item, variant_id in zip(items, new_variant_ids, strict=True):
        v = one(db, "SELECT * FROM variants WHERE variant_id = ?", [variant_id.strip().upper()])
        if v is None or v["product_id"] != item["product_id"]:
            raise ToolError(
                f"{variant_id!r} is not a variant of product {item['product_id']} (item {item['item_id']})"
            )
        if v["variant_id"] == item["variant_id"]:
            raise ToolError(f"item {item['item_id']} already is variant {variant_id}")
        if not v["available"]:
            raise ToolError(f"variant {v['variant_id']} ({v['options']}) is out of stock")
        difference += item["quantity"] * (v["price"] - item["unit_price"])
    difference = round(difference, 2)
    if pm["kind"] == "gift_card" and difference > (pm["gift_card_balance"] or 0):
        raise ToolError(
            f"gift card {pm['payment_method_id']} balance {pm['gift_card_balance']} does not cover {difference}"
        )
    return_id = _next_return_id(db)
    ids = [i["item_id"] for i in items]
    new_ids = [v.strip().upper() for v in new_variant_ids]
    db.execute(
        "INSERT INTO returns VALUES (?, ?, 'exchange', ?, ?, ?, ?, 'requested', ?)",
        [return_id, o["order_id"], ids, new_ids, pm["payment_method_id"], difference, NOW],
    )
    db.execute("UPDATE order_items SET status = 'exchange_requested' WHERE list_contains(?, item_id)", [ids])
    db.execute(
        "UPDATE orders SET status = 'exchange_requested', updated_at = ? WHERE order_id = ?",
        [NOW, o["order_id"]],
    )
    settle = "charged to" if difference > 0 else "refunded to"
    return {
        "exchange_id": return_id,
        "order_id": o["order_id"],
        "item_ids": ids,
        "new_variant_ids": new_ids,
        "price_difference": {"amount": abs(difference), "settlement": f"{settle} {pm['payment_method_id']}"},
    }


@tool(
    "Hand the conversation to a human agent when the request is outside policy or the tools cannot solve it.",
    {"summary": _text("Short summary of the customer's problem.", 1000), "customer_id": CUSTOMER_ID},
    required=["summary"],
    writes=True,
)
def transfer_to_human_agent(db, summary: str, customer_id: str | None = None) -> dict[str, Any]:
    (count,) = db.execute("SELECT count(*) FROM handoffs").fetchone()
    ticket = f"T{count + 1:05d}"
    db.execute("INSERT INTO handoffs VALUES (?, ?, ?, ?)", [ticket, customer_id, summary.strip(), NOW])
    return {
        "status": "transferred",
        "ticket_id": ticket,
        "message": "A human agent will reply within 24 hours.",
    }


TOOLS = [
    find_customer_by_email,
    find_customer_by_name_zip,
    get_customer_details,
    list_customer_orders,
    get_order_details,
    get_product_details,
    search_products,
    track_shipment,
    cancel_pending_order,
    modify_pending_order_address,
    return_delivered_items,
    exchange_delivered_items,
    transfer_to_human_agent,
]
