"""Deterministic data for the retail domain: customers, catalogue, orders, shipments, returns.

Everything comes from `random.Random(seed)` and fixed word lists, in a fixed order, so one seed
always gives the same ids and rows. "Today" is fixed too (NOW), so order ages and statuses agree.
"""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta

import duckdb

from magv.domains.sql import bulk_insert

NOW = datetime(2024, 6, 30, 12, 0, 0)
N_CUSTOMERS = 600
N_ORDERS = 1300

SCHEMA = """
CREATE TABLE customers (customer_id VARCHAR PRIMARY KEY, first_name VARCHAR, last_name VARCHAR,
    email VARCHAR UNIQUE, phone VARCHAR, address1 VARCHAR, address2 VARCHAR, city VARCHAR,
    state VARCHAR, zip VARCHAR, country VARCHAR, created_at DATE);
CREATE TABLE payment_methods (payment_method_id VARCHAR PRIMARY KEY, customer_id VARCHAR,
    kind VARCHAR, brand VARCHAR, last4 VARCHAR, paypal_email VARCHAR, gift_card_balance DECIMAL(10,2));
CREATE TABLE products (product_id VARCHAR PRIMARY KEY, name VARCHAR, category VARCHAR, description VARCHAR);
CREATE TABLE variants (variant_id VARCHAR PRIMARY KEY, product_id VARCHAR, options VARCHAR,
    price DECIMAL(10,2), available BOOLEAN);
CREATE TABLE orders (order_id VARCHAR PRIMARY KEY, customer_id VARCHAR, status VARCHAR,
    placed_at TIMESTAMP, address1 VARCHAR, address2 VARCHAR, city VARCHAR, state VARCHAR, zip VARCHAR,
    country VARCHAR, payment_method_id VARCHAR, total DECIMAL(10,2), cancel_reason VARCHAR,
    updated_at TIMESTAMP);
CREATE TABLE order_items (item_id VARCHAR PRIMARY KEY, order_id VARCHAR, product_id VARCHAR,
    variant_id VARCHAR, quantity INTEGER, unit_price DECIMAL(10,2), status VARCHAR);
CREATE TABLE shipments (tracking_number VARCHAR PRIMARY KEY, order_id VARCHAR, carrier VARCHAR,
    status VARCHAR, shipped_at TIMESTAMP, eta DATE, delivered_at TIMESTAMP);
CREATE TABLE tracking_events (tracking_number VARCHAR, ts TIMESTAMP, location VARCHAR, description VARCHAR);
CREATE TABLE returns (return_id VARCHAR PRIMARY KEY, order_id VARCHAR, kind VARCHAR, item_ids VARCHAR[],
    new_variant_ids VARCHAR[], payment_method_id VARCHAR, amount DECIMAL(10,2), status VARCHAR,
    created_at TIMESTAMP);
CREATE TABLE handoffs (ticket_id VARCHAR PRIMARY KEY, customer_id VARCHAR, summary VARCHAR, created_at TIMESTAMP);
"""

FIRST = """James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan
Joseph Jessica Thomas Sarah Charles Karen Daniel Lisa Matthew Nancy Anthony Betty Mark Sandra Donald
Ashley Steven Emily Andrew Kimberly Joshua Donna Kevin Michelle Brian Carol George Amanda Omar Sofia
Mei Yusuf Aisha Lucas Chloe Mateo Priya Noah Olivia Ethan Hana Diego Fatima Liam Grace""".split()  # noqa: SIM905
LAST = """Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez
Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark
Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams
Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Kim Patel Chen Okafor Silva Novak Schmidt
Rossi Dubois Tanaka""".split()  # noqa: SIM905
CITIES = [
    ("Austin", "TX", "787"), ("Seattle", "WA", "981"), ("Denver", "CO", "802"), ("Boston", "MA", "021"),
    ("Chicago", "IL", "606"), ("Portland", "OR", "972"), ("Atlanta", "GA", "303"), ("Phoenix", "AZ", "850"),
    ("Columbus", "OH", "432"), ("Nashville", "TN", "372"), ("San Diego", "CA", "921"), ("Miami", "FL", "331"),
    ("Minneapolis", "MN", "554"), ("Raleigh", "NC", "276"), ("Salt Lake City", "UT", "841"),
    ("Philadelphia", "PA", "191"), ("Madison", "WI", "537"), ("Richmond", "VA", "232"),
]  # fmt: skip
STREETS = """Oak Maple Cedar Pine Elm Willow Lake Hill Park Main River Sunset Highland Forest Spring Meadow
Church Mill Ridge Valley""".split()  # noqa: SIM905
SUFFIXES = ["St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Ct", "Way"]

COLORS = ["black", "white", "navy", "red", "green", "grey", "blue"]
SIZES = ["XS", "S", "M", "L", "XL"]
# name, category, option axes, base price
PRODUCTS = [
    ("Classic Cotton T-Shirt", "apparel", {"color": COLORS, "size": SIZES}, 18),
    ("Merino Wool Sweater", "apparel", {"color": ["grey", "navy", "green"], "size": SIZES}, 89),
    ("Zip-Up Hoodie", "apparel", {"color": COLORS, "size": SIZES}, 54),
    ("Rain Jacket", "apparel", {"color": ["yellow", "navy", "black"], "size": SIZES}, 120),
    ("Slim Fit Jeans", "apparel", {"fit": ["slim", "straight"], "waist": ["30", "32", "34", "36"]}, 69),
    ("Running Shorts", "apparel", {"color": COLORS, "size": SIZES}, 29),
    ("Wool Beanie", "apparel", {"color": COLORS}, 22),
    ("Trail Running Shoes", "footwear", {"color": ["grey", "blue", "black"], "size": ["8", "9", "10", "11", "12"]}, 135),
    ("Leather Sneakers", "footwear", {"color": ["white", "black"], "size": ["7", "8", "9", "10", "11"]}, 98),
    ("Hiking Boots", "footwear", {"material": ["leather", "synthetic"], "size": ["8", "9", "10", "11"]}, 165),
    ("Canvas Slip-Ons", "footwear", {"color": COLORS, "size": ["7", "8", "9", "10"]}, 45),
    ("Hiking Backpack", "bags", {"capacity": ["28L", "38L", "48L"], "color": ["green", "black", "blue"]}, 110),
    ("Laptop Sleeve", "bags", {"size": ['13"', '14"', '16"'], "color": ["grey", "black"]}, 35),
    ("Leather Messenger Bag", "bags", {"color": ["brown", "black"]}, 149),
    ("Weekender Duffel", "bags", {"color": ["olive", "navy", "black"]}, 95),
    ("Wireless Headphones", "electronics", {"color": ["black", "silver", "blue"], "noise cancelling": ["yes", "no"]}, 199),
    ("Bluetooth Speaker", "electronics", {"color": ["black", "red", "blue"], "battery": ["12h", "20h"]}, 79),
    ("Smart Watch", "electronics", {"case": ["40mm", "44mm"], "band": ["silicone", "leather", "metal"]}, 249),
    ("E-Reader", "electronics", {"storage": ["8GB", "32GB"], "ads": ["with ads", "no ads"]}, 139),
    ("USB-C Charger", "electronics", {"power": ["30W", "65W", "100W"]}, 39),
    ("Mechanical Keyboard", "electronics", {"switch": ["linear", "tactile", "clicky"], "layout": ["full", "tenkeyless"]}, 119),
    ("Wireless Mouse", "electronics", {"color": ["black", "white"], "connection": ["bluetooth", "usb receiver"]}, 45),
    ("Action Camera", "electronics", {"resolution": ["4K", "5K"], "bundle": ["basic", "adventure kit"]}, 299),
    ("Portable Power Bank", "electronics", {"capacity": ["10000mAh", "20000mAh"], "color": ["black", "white"]}, 49),
    ("Robot Vacuum", "home", {"model": ["standard", "self-emptying"]}, 349),
    ("Air Purifier", "home", {"room size": ["small", "medium", "large"]}, 189),
    ("Desk Lamp", "home", {"finish": ["black", "brass", "white"], "bulb": ["LED", "smart LED"]}, 59),
    ("Linen Bed Sheets", "home", {"size": ["twin", "full", "queen", "king"], "color": ["white", "sage", "sand"]}, 129),
    ("Memory Foam Pillow", "home", {"firmness": ["soft", "medium", "firm"]}, 49),
    ("Bath Towel Set", "home", {"color": ["white", "grey", "navy"], "pieces": ["4", "6"]}, 64),
    ("Scented Candle", "home", {"scent": ["cedar", "lavender", "vanilla", "sea salt"]}, 24),
    ("Espresso Machine", "kitchen", {"color": ["silver", "black"], "grinder": ["built-in", "none"]}, 429),
    ("Electric Kettle", "kitchen", {"capacity": ["1L", "1.7L"], "finish": ["steel", "matte black"]}, 69),
    ("Cast Iron Skillet", "kitchen", {"size": ['10"', '12"']}, 44),
    ("Chef's Knife", "kitchen", {"length": ['6"', '8"'], "steel": ["german", "japanese"]}, 89),
    ("Blender", "kitchen", {"power": ["600W", "1200W"], "color": ["black", "red"]}, 119),
    ("Stainless Water Bottle", "kitchen", {"capacity": ["500ml", "750ml", "1L"], "color": COLORS}, 29),
    ("Coffee Grinder", "kitchen", {"type": ["blade", "burr"]}, 79),
    ("Camping Tent", "outdoor", {"capacity": ["2-person", "4-person"], "season": ["3-season", "4-season"]}, 249),
    ("Sleeping Bag", "outdoor", {"rating": ["20F", "35F"], "length": ["regular", "long"]}, 139),
    ("Camping Stove", "outdoor", {"fuel": ["canister", "multi-fuel"]}, 89),
    ("Trekking Poles", "outdoor", {"material": ["aluminium", "carbon"]}, 75),
    ("Headlamp", "outdoor", {"brightness": ["300lm", "600lm"], "color": ["black", "orange"]}, 35),
    ("Yoga Mat", "fitness", {"thickness": ["4mm", "6mm"], "color": ["purple", "black", "teal"]}, 48),
    ("Adjustable Dumbbells", "fitness", {"max weight": ["25lb", "52lb"]}, 299),
    ("Resistance Bands", "fitness", {"level": ["light", "medium", "heavy"]}, 25),
    ("Foam Roller", "fitness", {"density": ["soft", "firm"], "length": ["12in", "36in"]}, 32),
    ("Ergonomic Office Chair", "office", {"color": ["black", "grey"], "armrests": ["fixed", "adjustable"]}, 329),
    ("Standing Desk", "office", {"top": ["oak", "walnut", "white"], "width": ["48in", "60in"]}, 499),
    ("Notebook Set", "office", {"paper": ["lined", "dotted", "blank"]}, 19),
]  # fmt: skip
DESCRIPTIONS = {
    "apparel": "Everyday clothing, machine washable.",
    "footwear": "Comfortable footwear with a 30-day fit guarantee.",
    "bags": "Durable bags for travel and commuting.",
    "electronics": "Consumer electronics with a 1-year warranty.",
    "home": "Home essentials.",
    "kitchen": "Kitchen tools and appliances.",
    "outdoor": "Gear for camping and hiking.",
    "fitness": "Home fitness equipment.",
    "office": "Furniture and supplies for the home office.",
}
CARRIERS = ["UPS", "FedEx", "USPS"]
HUBS = ["Memphis, TN", "Louisville, KY", "Indianapolis, IN", "Dallas, TX", "Ontario, CA", "Newark, NJ"]
# status, share of orders, age range in days
STATUSES = [
    ("pending", 0.10, (0, 2)), ("processed", 0.08, (1, 4)), ("shipped", 0.14, (2, 8)),
    ("delivered", 0.50, (9, 170)), ("cancelled", 0.10, (1, 170)), ("returned", 0.08, (25, 170)),
]  # fmt: skip
CANCEL_REASONS = ["no longer needed", "ordered by mistake"]


def generate(db: duckdb.DuckDBPyConnection, seed: int) -> None:
    rng = random.Random(seed)
    db.execute(SCHEMA)
    customers, payments = _customers(rng)
    products, variants = _catalogue(rng)
    bulk_insert(db, "customers", CUSTOMER_COLUMNS, customers)
    bulk_insert(db, "payment_methods", PAYMENT_COLUMNS, payments)
    bulk_insert(db, "products", ["product_id", "name", "category", "description"], products)
    bulk_insert(db, "variants", ["variant_id", "product_id", "options", "price", "available"], variants)
    tables = _orders(rng, customers, payments, variants)
    for table, (columns, records) in tables.items():
        bulk_insert(db, table, columns, records)


CUSTOMER_COLUMNS = [
    "customer_id", "first_name", "last_name", "email", "phone", "address1", "address2", "city",
    "state", "zip", "country", "created_at",
]  # fmt: skip
PAYMENT_COLUMNS = [
    "payment_method_id",
    "customer_id",
    "kind",
    "brand",
    "last4",
    "paypal_email",
    "gift_card_balance",
]


def _address(rng: random.Random) -> tuple[str, str | None, str, str, str]:
    city, state, prefix = rng.choice(CITIES)
    line1 = f"{rng.randint(10, 9899)} {rng.choice(STREETS)} {rng.choice(SUFFIXES)}"
    line2 = f"Apt {rng.randint(1, 40)}{rng.choice('ABCD')}" if rng.random() < 0.3 else None
    return line1, line2, city, state, f"{prefix}{rng.randint(1, 99):02d}"


def _customers(rng: random.Random) -> tuple[list[tuple], list[tuple]]:
    customers, payments, emails = [], [], set()
    n_payment = 0
    for n in range(1, N_CUSTOMERS + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{first}.{last}{rng.randint(1, 99)}@example.com".lower()
        while email in emails:
            email = f"{first}.{last}{rng.randint(100, 999)}@example.com".lower()
        emails.add(email)
        customer_id = f"C{n:05d}"
        phone = f"+1-{rng.randint(201, 989)}-555-{rng.randint(0, 9999):04d}"
        created = (NOW - timedelta(days=rng.randint(200, 1500))).date()
        customers.append((customer_id, first, last, email, phone, *_address(rng), "USA", created))
        kinds = rng.sample(["credit_card", "paypal", "gift_card"], k=rng.choice([1, 1, 2, 2, 3]))
        for kind in kinds:
            n_payment += 1
            pid = f"pm_{n_payment:05d}"
            if kind == "credit_card":
                brand = rng.choice(["visa", "mastercard", "amex"])
                payments.append((pid, customer_id, kind, brand, f"{rng.randint(0, 9999):04d}", None, None))
            elif kind == "paypal":
                payments.append((pid, customer_id, kind, None, None, email, None))
            else:
                payments.append((pid, customer_id, kind, None, None, None, round(rng.uniform(5, 200), 2)))
    return customers, payments


def _catalogue(rng: random.Random) -> tuple[list[tuple], list[tuple]]:
    products, variants = [], []
    for n, (name, category, axes, base) in enumerate(PRODUCTS, start=1):
        product_id = f"P{1000 + n}"
        products.append((product_id, name, category, DESCRIPTIONS[category]))
        combos = list(itertools.product(*axes.values()))
        chosen = sorted(rng.sample(range(len(combos)), k=min(len(combos), 8)))
        for k, index in enumerate(chosen, start=1):
            options = ", ".join(f"{axis}: {value}" for axis, value in zip(axes, combos[index], strict=True))
            price = round(base * rng.uniform(0.9, 1.2), 2)
            variants.append((f"{product_id}-{k:02d}", product_id, options, price, rng.random() > 0.15))
    return products, variants


ORDER_COLUMNS = [
    "order_id", "customer_id", "status", "placed_at", "address1", "address2", "city", "state", "zip",
    "country", "payment_method_id", "total", "cancel_reason", "updated_at",
]  # fmt: skip


def _orders(rng: random.Random, customers: list[tuple], payments: list[tuple], variants: list[tuple]) -> dict:
    by_customer: dict[str, list[str]] = {}
    for p in payments:
        by_customer.setdefault(p[1], []).append(p[0])
    drafts = []
    for _ in range(N_ORDERS):
        customer = rng.choice(customers)
        status, _, (lo, hi) = rng.choices(STATUSES, weights=[s[1] for s in STATUSES])[0]
        placed = NOW - timedelta(
            days=rng.randint(lo, hi), hours=rng.randint(0, 23), minutes=rng.randint(0, 59)
        )
        drafts.append((placed, customer, status))
    drafts.sort(key=lambda d: (d[0], d[1][0]))
    orders, items, shipments, events, returns = [], [], [], [], []
    for n, (placed, customer, status) in enumerate(drafts, start=1):
        order_id = f"W{1000000 + n}"
        lines = []
        for k, variant in enumerate(rng.sample(variants, k=rng.choice([1, 1, 2, 2, 3, 4])), start=1):
            item_status = "returned" if status == "returned" and (k == 1 or rng.random() < 0.5) else "ordered"
            lines.append(
                (
                    f"{order_id}-{k}",
                    order_id,
                    variant[1],
                    variant[0],
                    rng.choice([1, 1, 1, 2]),
                    variant[3],
                    item_status,
                )
            )
        items.extend(lines)
        total = round(sum(q * price for *_, q, price, _s in lines), 2)
        payment = rng.choice(by_customer[customer[0]])
        reason = rng.choice(CANCEL_REASONS) if status == "cancelled" else None
        address = customer[5:11] if rng.random() < 0.9 else (*_address(rng), "USA")
        orders.append((order_id, customer[0], status, placed, *address, payment, total, reason, placed))
        if status in ("shipped", "delivered", "returned"):
            shipment, track = _shipment(rng, order_id, placed, status, customer[7])
            shipments.append(shipment)
            events.extend(track)
        if status == "returned":
            returned = [i[0] for i in lines if i[6] == "returned"]
            amount = round(sum(i[4] * i[5] for i in lines if i[6] == "returned"), 2)
            created = placed + timedelta(days=rng.randint(12, 20))
            returns.append(
                (
                    f"R{len(returns) + 1:05d}",
                    order_id,
                    "return",
                    returned,
                    [],
                    payment,
                    amount,
                    "completed",
                    created,
                )
            )
    return {
        "orders": (ORDER_COLUMNS, orders),
        "order_items": (
            ["item_id", "order_id", "product_id", "variant_id", "quantity", "unit_price", "status"],
            items,
        ),
        "shipments": (
            ["tracking_number", "order_id", "carrier", "status", "shipped_at", "eta", "delivered_at"],
            shipments,
        ),
        "tracking_events": (["tracking_number", "ts", "location", "description"], events),
        "returns": (
            [
                "return_id",
                "order_id",
                "kind",
                "item_ids",
                "new_variant_ids",
                "payment_method_id",
                "amount",
                "status",
                "created_at",
            ],
            returns,
        ),
    }


def _tracking_number(rng: random.Random, carrier: str) -> str:
    if carrier == "UPS":
        return "1Z" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPRTVWXY") for _ in range(14))
    if carrier == "FedEx":
        return "".join(rng.choice("0123456789") for _ in range(12))
    return "9400" + "".join(rng.choice("0123456789") for _ in range(18))


def _shipment(
    rng: random.Random, order_id: str, placed: datetime, status: str, city: str
) -> tuple[tuple, list[tuple]]:
    carrier = rng.choice(CARRIERS)
    number = _tracking_number(rng, carrier)
    shipped = placed + timedelta(days=1, hours=rng.randint(1, 20))
    eta = (shipped + timedelta(days=rng.randint(3, 6))).date()
    hub = rng.choice(HUBS)
    track = [
        (number, shipped - timedelta(hours=3), "Warehouse, Reno, NV", "Label created"),
        (number, shipped, "Reno, NV", f"Picked up by {carrier}"),
    ]
    arrived = shipped + timedelta(days=1, hours=rng.randint(0, 12))
    if arrived < NOW:
        track.append((number, arrived, hub, "Arrived at sort facility"))
    if status == "shipped":
        delayed = rng.random() < 0.15
        state = "delayed" if delayed else "in_transit"
        if delayed:
            track.append(
                (number, min(arrived + timedelta(hours=6), NOW), hub, "Delay: weather conditions at facility")
            )
        return (number, order_id, carrier, state, shipped, eta, None), track
    delivered = datetime.combine(eta, datetime.min.time()) + timedelta(hours=rng.randint(9, 18))
    track += [
        (number, delivered - timedelta(hours=5), city, "Out for delivery"),
        (number, delivered, city, "Delivered, left at front door"),
    ]
    return (number, order_id, carrier, "delivered", shipped, eta, delivered), track
