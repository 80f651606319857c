"""Deterministic demo catalog: categories, products, variants, images and collections.

The same `seed` and `products` always produce the same rows (ids, names, prices and
timestamps included), so benchmarks and screenshots are reproducible. Everything is
inserted with explicit ids in one transaction, in chunks, so it is all-or-nothing.
"""

from __future__ import annotations

import math
import random
import re
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from tqdm import tqdm

from models.catalog import tables as t
from models.db import Database

BASE_TIME = datetime(2025, 1, 1, tzinfo=UTC)
PRODUCT_SPAN = timedelta(days=365)  # products' created_at spread over the first year
PRODUCTS_PER_CHUNK = 2_000  # ~2.5 variants and ~2 images each: a few thousand rows a batch
CDN = "https://cdn.shopql.example/products"
DASH = "\u2013"  # en dash: alt text reads "Vintage Linen Shirt \u2013 view 1"

Row = dict[str, Any]
# (name, materials or themes, ((leaf name, nouns), ...))
Branch = tuple[str, tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]


@dataclass(frozen=True, slots=True)
class Department:
    """A level-0 category and the vocabulary of everything under it."""

    name: str
    adjectives: tuple[str, ...]
    options: tuple[tuple[str, ...], tuple[str, ...]]  # variant axes, e.g. sizes x colors
    prices: tuple[int, int]  # whole currency units, low..high
    name_format: str
    intro: str
    branches: tuple[Branch, ...]


# fmt: off
_COLORS = ("Black", "Navy", "Olive", "Sand", "Burgundy", "Grey", "White")
DEPARTMENTS = (
    Department("Apparel", ("Vintage", "Classic", "Relaxed", "Slim", "Everyday", "Tailored", "Washed", "Heritage", "Cropped", "Essential"),  # noqa: E501
        (("XS", "S", "M", "L", "XL"), _COLORS), (12, 220), "{adj} {material} {noun}",
        "{a_adj} {noun} cut from {material}.", (
        ("Men", ("Linen", "Cotton", "Wool", "Denim", "Flannel"), (("Shirts", ("Shirt", "Oxford Shirt", "Polo")), ("Trousers", ("Chinos", "Trousers", "Joggers")), ("Jackets", ("Jacket", "Bomber", "Parka")), ("Knitwear", ("Sweater", "Cardigan", "Hoodie")))),  # noqa: E501
        ("Women", ("Silk", "Cotton", "Cashmere", "Linen", "Satin"), (("Dresses", ("Dress", "Midi Dress", "Sundress")), ("Tops", ("Blouse", "Tee", "Camisole")), ("Skirts", ("Skirt", "Pleated Skirt", "Wrap Skirt")), ("Outerwear", ("Coat", "Trench Coat", "Blazer")))),  # noqa: E501
        ("Kids", ("Organic Cotton", "Fleece", "Jersey", "Corduroy"), (("Baby", ("Romper", "Bodysuit", "Sleepsuit")), ("Boys", ("T-Shirt", "Shorts", "Dungarees")), ("Girls", ("Pinafore", "Leggings", "Party Dress")))),  # noqa: E501
        ("Accessories", ("Leather", "Canvas", "Wool", "Suede"), (("Hats", ("Beanie", "Cap", "Bucket Hat")), ("Scarves", ("Scarf", "Shawl", "Snood")), ("Bags", ("Tote", "Backpack", "Crossbody Bag")))),  # noqa: E501
    )),
    Department("Home & Kitchen", ("Rustic", "Modern", "Nordic", "Artisan", "Minimalist", "Farmhouse", "Handmade", "Elegant", "Compact"),  # noqa: E501
        (("Small", "Medium", "Large"), ("Charcoal", "Ivory", "Sage", "Terracotta", "Natural")), (9, 450),  # noqa: E501
        "{adj} {material} {noun}", "{a_adj} {noun} made of {material}.", (
        ("Cookware", ("Cast Iron", "Stainless Steel", "Copper", "Enamel"), (("Pans", ("Frying Pan", "Skillet", "Wok")), ("Pots", ("Stockpot", "Saucepan", "Dutch Oven")), ("Bakeware", ("Baking Sheet", "Loaf Tin", "Muffin Tray")))),  # noqa: E501
        ("Tableware", ("Stoneware", "Porcelain", "Glass", "Ceramic"), (("Plates", ("Dinner Plate", "Side Plate", "Platter")), ("Mugs", ("Mug", "Espresso Cup", "Teacup")), ("Glassware", ("Tumbler", "Wine Glass", "Carafe")))),  # noqa: E501
        ("Furniture", ("Oak", "Walnut", "Rattan", "Bamboo"), (("Chairs", ("Dining Chair", "Armchair", "Stool")), ("Tables", ("Side Table", "Coffee Table", "Desk")), ("Storage", ("Bookcase", "Sideboard", "Shelf Unit")))),  # noqa: E501
        ("Bedding & Decor", ("Linen", "Cotton", "Velvet", "Jute"), (("Bedding", ("Duvet Cover", "Pillowcase", "Throw")), ("Lighting", ("Table Lamp", "Floor Lamp", "Pendant")), ("Rugs", ("Rug", "Runner", "Doormat")), ("Vases", ("Vase", "Planter", "Candle Holder")))),  # noqa: E501
    )),
    Department("Electronics", ("Wireless", "Compact", "Pro", "Ultra", "Smart", "Portable", "Studio", "Rugged", "Slim"),  # noqa: E501
        (("Standard", "Plus", "Max"), ("Black", "Silver", "White", "Midnight Blue")), (15, 499),
        "{adj} {material} {noun}", "{a_adj} {noun} with a {material} finish.", (
        ("Audio", ("Matte", "Aluminium", "Graphite", "Walnut"), (("Headphones", ("Headphones", "Earbuds", "Headset")), ("Speakers", ("Speaker", "Soundbar", "Bookshelf Speaker")), ("Microphones", ("Microphone", "Podcast Mic", "Lavalier Mic")))),  # noqa: E501
        ("Computers", ("Aluminium", "Carbon", "Matte", "Brushed Steel"), (("Laptops", ("Laptop", "Notebook", "Chromebook")), ("Monitors", ("Monitor", "Display", "Ultrawide Monitor")), ("Keyboards", ("Keyboard", "Mechanical Keyboard", "Keypad")), ("Mice", ("Mouse", "Trackball", "Trackpad")))),  # noqa: E501
        ("Phones & Tablets", ("Silicone", "Leather", "Glass", "Aluminium"), (("Cases", ("Phone Case", "Folio Case", "Tablet Sleeve")), ("Chargers", ("Charger", "Power Bank", "Charging Dock")), ("Tablets", ("Tablet", "E-Reader", "Drawing Tablet")))),  # noqa: E501
        ("Smart Home", ("Matte", "Glossy", "Fabric", "Frosted"), (("Lighting", ("Smart Bulb", "Light Strip", "Smart Lamp")), ("Security", ("Doorbell Camera", "Motion Sensor", "Smart Lock")), ("Climate", ("Thermostat", "Air Purifier", "Smart Fan")))),  # noqa: E501
    )),
    Department("Sports & Outdoors", ("Lightweight", "Trail", "All-Weather", "Performance", "Packable", "Alpine", "Breathable", "Expedition"),  # noqa: E501
        (("S", "M", "L"), ("Forest Green", "Slate", "Orange", "Black", "Sky Blue")), (10, 480),
        "{adj} {material} {noun}", "{a_adj} {noun} built from {material}.", (
        ("Camping", ("Ripstop Nylon", "Down", "Canvas", "Titanium"), (("Tents", ("Tent", "Tarp", "Bivy")), ("Sleeping Bags", ("Sleeping Bag", "Quilt", "Sleeping Pad")), ("Cooking", ("Camp Stove", "Cook Set", "Kettle")))),  # noqa: E501
        ("Fitness", ("Rubber", "Cork", "Neoprene", "Steel"), (("Yoga", ("Yoga Mat", "Yoga Block", "Strap")), ("Strength", ("Dumbbell", "Kettlebell", "Resistance Band")), ("Cardio", ("Jump Rope", "Step Platform", "Agility Ladder")))),  # noqa: E501
        ("Cycling", ("Carbon", "Aluminium", "Reflective", "Merino"), (("Helmets", ("Helmet", "Road Helmet", "MTB Helmet")), ("Bike Accessories", ("Bike Light", "Saddle Bag", "Bottle Cage")), ("Cycling Apparel", ("Jersey", "Bib Shorts", "Gloves")))),  # noqa: E501
        ("Running", ("Mesh", "Merino", "Recycled Polyester", "Softshell"), (("Running Shoes", ("Running Shoe", "Trail Shoe", "Racing Flat")), ("Running Apparel", ("Running Tee", "Tights", "Windbreaker")), ("Hydration", ("Water Bottle", "Hydration Vest", "Soft Flask")))),  # noqa: E501
    )),
    Department("Books", ("Silent", "Hidden", "Last", "Midnight", "Crimson", "Forgotten", "Golden", "Wandering", "Broken", "Distant"),  # noqa: E501
        (("Hardcover", "Paperback", "E-Book", "Audiobook"), ()), (8, 60), "The {adj} {noun}",
        "{a_adj} {category} title about {material}.", (
        ("Fiction", ("love and loss", "family secrets", "second chances", "first contact", "an unsolved crime"), (("Mystery", ("Witness", "Alibi", "Cipher", "Inheritance")), ("Science Fiction", ("Starship", "Colony", "Signal", "Horizon")), ("Romance", ("Summer", "Promise", "Letters", "Harbor")), ("Literary Fiction", ("River", "Orchard", "House", "Season")))),  # noqa: E501
        ("Non-Fiction", ("the ideas that shaped an era", "an extraordinary life", "how the world works", "a turbulent century"), (("History", ("Empire", "Frontier", "Revolution")), ("Biography", ("Life", "Journey", "Voice")), ("Science", ("Universe", "Atom", "Brain")))),  # noqa: E501
        ("Children's Books", ("friendship", "bedtime adventures", "growing up", "brave animals"), (("Picture Books", ("Bear", "Moon", "Balloon")), ("Early Readers", ("Dragon", "Treehouse", "Robot")), ("Young Adult", ("Academy", "Rebellion", "Crown")))),  # noqa: E501
        ("Food & Drink", ("seasonal cooking", "weeknight dinners", "baking at home", "the flavours of the world"), (("Baking", ("Loaf", "Oven", "Crumb")), ("Vegetarian", ("Garden", "Harvest", "Pantry")), ("World Cuisine", ("Spice Route", "Market", "Table")))),  # noqa: E501
    )),
    Department("Beauty", ("Hydrating", "Gentle", "Radiant", "Nourishing", "Brightening", "Soothing", "Daily", "Botanical", "Overnight"),  # noqa: E501
        (("30 ml", "50 ml", "100 ml"), ("Unscented", "Citrus", "Lavender", "Rose")), (4, 120),
        "{adj} {material} {noun}", "{a_adj} {noun} enriched with {material}.", (
        ("Skincare", ("Vitamin C", "Hyaluronic", "Aloe", "Green Tea", "Niacinamide"), (("Cleansers", ("Cleanser", "Cleansing Balm", "Micellar Water")), ("Moisturizers", ("Moisturizer", "Day Cream", "Night Cream")), ("Serums", ("Serum", "Face Oil", "Essence")), ("Sun Care", ("Sunscreen", "SPF Lotion", "After-Sun Gel")))),  # noqa: E501
        ("Makeup", ("Mineral", "Jojoba", "Vitamin E", "Rosehip"), (("Lips", ("Lipstick", "Lip Gloss", "Lip Balm")), ("Face", ("Foundation", "Concealer", "Blush")), ("Eyes", ("Mascara", "Eyeliner", "Eyeshadow Palette")))),  # noqa: E501
        ("Hair Care", ("Argan", "Coconut", "Keratin", "Rosemary"), (("Shampoo", ("Shampoo", "Clarifying Shampoo", "Dry Shampoo")), ("Conditioner", ("Conditioner", "Hair Mask", "Leave-In Spray")), ("Styling", ("Styling Cream", "Sea Salt Spray", "Pomade")))),  # noqa: E501
        ("Bath & Body", ("Shea", "Oatmeal", "Eucalyptus", "Sandalwood"), (("Body Wash", ("Body Wash", "Shower Oil", "Bath Foam")), ("Soap", ("Bar Soap", "Hand Wash", "Soap Set")), ("Body Care", ("Body Lotion", "Body Scrub", "Hand Cream")))),  # noqa: E501
    )),
)

OCCASIONS = ("weekend getaways", "busy weekday mornings", "gifting", "quiet evenings at home", "travel", "the office", "small apartments", "long summer days", "cold winter nights", "everyday use", "beginners and experts alike", "family gatherings")  # noqa: E501
PRAISE = ("Customers keep coming back to it season after season.", "Our team tested every detail over months of real use.", "It pairs beautifully with the rest of our {department} range.", "Reviewers call it a standout among {category}.", "A thoughtful upgrade that quietly earns its place.", "Practical, dependable and surprisingly affordable.", "One of the most reviewed items in {department}.")  # noqa: E501
EXTRAS = ("Ships in recycled, plastic-free packaging.", "Backed by a two-year warranty.", "Limited stock available this season.", "Each piece is inspected by hand before it leaves the workshop.", "Made in small batches by an independent studio.", "Free returns within thirty days.", "Responsibly sourced materials throughout.", "Designed in Copenhagen and produced in Portugal.")  # noqa: E501
COLLECTIONS = (
    ("Summer Sale", "Sunny savings on warm-weather favourites."),
    ("New Arrivals", "The latest additions to the catalog, fresh off the truck."),
    ("Bestsellers", "What everyone is buying right now."),
    ("Gift Ideas", "Presents for every person on your list."),
    ("Staff Picks", "Hand-picked favourites from our team."),
    ("Back to School", "Everything for the new term."),
    ("Eco Edit", "Products made with sustainable materials."),
    ("Everyday Essentials", "Reliable basics at friendly prices."),
)
# fmt: on


class SeedError(Exception):
    """Seeding was refused (e.g. the catalog already holds data)."""


@dataclass(frozen=True)
class SeedSummary:
    categories: int
    products: int
    variants: int
    images: int
    collections: int


@dataclass(frozen=True, slots=True)
class _Leaf:
    """Where a product can live: its category id plus the words its name is built from."""

    category_id: int
    category: str
    department: Department
    materials: tuple[str, ...]
    nouns: tuple[str, ...]
    option_names: tuple[str, ...]


def _slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower().replace("'", "")).strip("-")


def _option_names(department: Department) -> tuple[str, ...]:
    first, second = department.options
    return tuple(f"{a} / {b}" for a in first for b in second) if second else first


def _build_categories() -> tuple[list[Row], list[_Leaf], list[_Leaf]]:
    """The fixed 3-level tree and the leaves (level 2 plus level 1) products may join."""
    rows: list[Row] = []
    level2: list[_Leaf] = []
    level1: list[_Leaf] = []

    def add(name: str, slug: str, parent_id: int | None, level: int, about: str) -> int:
        created = BASE_TIME - timedelta(days=30) + timedelta(minutes=len(rows))
        rows.append({
            "id": len(rows) + 1, "parent_id": parent_id, "name": name, "slug": slug,
            "description": about, "level": level, "created_at": created, "updated_at": created,
        })  # fmt: skip
        return len(rows)

    for dept in DEPARTMENTS:
        options = _option_names(dept)
        root = add(dept.name, _slugify(dept.name), None, 0, f"Shop all {dept.name.lower()}.")
        for name, materials, leaves in dept.branches:
            slug1 = f"{_slugify(dept.name)}-{_slugify(name)}"
            branch = add(name, slug1, root, 1, f"{dept.name} / {name}: our full selection.")
            all_nouns = tuple(noun for _, nouns in leaves for noun in nouns)
            level1.append(_Leaf(branch, name, dept, materials, all_nouns, options))
            for leaf_name, nouns in leaves:
                about = f"{leaf_name} from our {name.lower()} range."
                leaf = add(leaf_name, f"{slug1}-{_slugify(leaf_name)}", branch, 2, about)
                level2.append(_Leaf(leaf, leaf_name, dept, materials, nouns, options))
    return rows, level2, level1


def _describe(rng: random.Random, leaf: _Leaf, adj: str, material: str, noun: str) -> str:
    article = "An" if adj[0] in "AEIOU" else "A"
    words = {"a_adj": f"{article} {adj.lower()}", "material": material.lower()}
    words |= {"noun": noun.lower(), "category": leaf.category.lower()}
    words["department"] = leaf.department.name.lower()
    sentences = [leaf.department.intro.format(**words)]
    if rng.random() < 0.7:
        sentences.append(rng.choice(PRAISE).format(**words))
    if rng.random() < 0.5:
        sentences.append(f"Perfect for {rng.choice(OCCASIONS)}.")
    if len(sentences) < 3 and rng.random() < 0.4:
        sentences.append(rng.choice(EXTRAS))
    return " ".join(sentences[:3])


def _generate(
    rng: random.Random, count: int, leaves: tuple[list[_Leaf], list[_Leaf]], currency: str
) -> Iterator[tuple[list[Row], list[Row], list[Row]]]:
    """Product, variant and image rows, PRODUCTS_PER_CHUNK products at a time."""
    level2, level1 = leaves
    step = max(1, int(PRODUCT_SPAN.total_seconds()) // count)
    slots = list(range(count))
    rng.shuffle(slots)  # created_at order differs from id order
    slugs: dict[str, int] = {}
    variant_id = image_id = 0
    product_rows: list[Row] = []
    variant_rows: list[Row] = []
    image_rows: list[Row] = []
    for index in range(count):
        pid = index + 1
        leaf = rng.choice(level2 if rng.random() < 0.85 else level1)
        dept = leaf.department
        adj, material, noun = (
            rng.choice(dept.adjectives), rng.choice(leaf.materials), rng.choice(leaf.nouns)
        )  # fmt: skip
        name = dept.name_format.format(adj=adj, material=material, noun=noun)
        base_slug = _slugify(name)
        seen = slugs.get(base_slug, 0) + 1
        slugs[base_slug] = seen
        slug = base_slug if seen == 1 else f"{base_slug}-{seen}"
        created = BASE_TIME + timedelta(seconds=slots[index] * step + rng.randrange(step))
        updated = created + timedelta(seconds=rng.randrange(30 * 86_400))

        low, high = dept.prices
        whole = int(math.exp(rng.uniform(math.log(low), math.log(high))))
        sold_out = rng.random() < 0.04
        picks = sorted(rng.sample(range(len(leaf.option_names)), rng.randint(1, 4)))
        prices = []
        for position, option in enumerate(picks, start=1):
            amount = min(499, whole + rng.randint(0, max(1, whole // 8))) * 100 + 99
            prices.append(amount)
            quantity = 0 if sold_out or rng.random() < 0.06 else rng.randint(1, 120)
            variant_id += 1
            variant_rows.append({
                "id": variant_id, "product_id": pid, "sku": f"SKU-{pid:06d}-{position}",
                "name": leaf.option_names[option], "price_amount": amount,
                "currency": currency, "quantity": quantity,
                "created_at": created, "updated_at": updated,
            })  # fmt: skip
        for position in range(rng.randint(1, 3)):
            image_id += 1
            image_rows.append({
                "id": image_id, "product_id": pid, "position": position,
                "url": f"{CDN}/{slug}-{position}.jpg", "alt": f"{name} {DASH} view {position + 1}",
            })  # fmt: skip
        product_rows.append({
            "id": pid, "name": name, "slug": slug,
            "description": _describe(rng, leaf, adj, material, noun),
            "is_published": rng.random() >= 0.05, "category_id": leaf.category_id,
            "price_min": min(prices), "price_max": max(prices), "currency": currency,
            "created_at": created, "updated_at": updated,
        })  # fmt: skip
        if len(product_rows) == PRODUCTS_PER_CHUNK or pid == count:
            yield product_rows, variant_rows, image_rows
            product_rows, variant_rows, image_rows = [], [], []


def _build_collections(rng: random.Random, count: int) -> tuple[list[Row], list[Row]]:
    chosen = sorted(rng.sample(range(len(COLLECTIONS)), rng.randint(6, 8)))
    rows: list[Row] = []
    links: list[Row] = []
    previous: list[int] = []
    for cid, which in enumerate(chosen, start=1):
        name, about = COLLECTIONS[which]
        created = BASE_TIME + timedelta(days=7 * cid)
        rows.append({
            "id": cid, "name": name, "slug": _slugify(name), "description": about,
            "created_at": created, "updated_at": created,
        })  # fmt: skip
        size = max(1, round(count * rng.uniform(0.03, 0.08)))
        members = set(rng.sample(range(1, count + 1), min(size, count)))
        members.update(previous[:2])  # guarantee some products sit in 2+ collections
        previous = sorted(members)
        links.extend({"collection_id": cid, "product_id": pid} for pid in previous)
    return rows, links


async def _catalog_is_empty(conn: AsyncConnection) -> bool:
    for table in (t.products, t.categories, t.collections):
        if (await conn.execute(sa.select(table.c.id).limit(1))).first() is not None:
            return False
    return True


async def catalog_is_empty(db: Database) -> bool:
    """True when there are no products, categories or collections."""
    async with db.read() as conn:
        return await _catalog_is_empty(conn)


async def _insert(conn: AsyncConnection, table: sa.Table, rows: list[Row]) -> None:
    for start in range(0, len(rows), 5_000):
        await conn.execute(table.insert(), rows[start : start + 5_000])


async def seed_catalog(
    db: Database,
    *,
    products: int = 500,
    seed: int = 42,
    currency: str = "USD",
    progress: bool = False,
) -> SeedSummary:
    """Fill an empty catalog with `products` generated products; raise SeedError otherwise."""
    if products < 1:
        raise ValueError("products must be at least 1")
    if not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
        raise ValueError(f"currency must be a 3-letter ISO 4217 code, got {currency!r}")
    currency = currency.upper()
    rng = random.Random(seed)  # noqa: S311 - reproducible demo data, not security
    category_rows, level2, level1 = _build_categories()
    totals = {"variants": 0, "images": 0}
    async with db.transaction() as conn:
        if not await _catalog_is_empty(conn):
            raise SeedError("the catalog is not empty: seed_catalog only fills an empty database")
        await _insert(conn, t.categories, category_rows)
        with tqdm(
            total=products, unit="product", file=sys.stderr, disable=not progress, desc="seed"
        ) as bar:
            for product_rows, variant_rows, image_rows in _generate(
                rng, products, (level2, level1), currency
            ):
                await _insert(conn, t.products, product_rows)
                await _insert(conn, t.variants, variant_rows)
                await _insert(conn, t.images, image_rows)
                totals["variants"] += len(variant_rows)
                totals["images"] += len(image_rows)
                bar.update(len(product_rows))
        collection_rows, links = _build_collections(rng, products)
        await _insert(conn, t.collections, collection_rows)
        await _insert(conn, t.collection_products, links)
        await seed_shipping_and_promos(conn, currency=currency)
        # Fresh statistics, so the planners pick the sort index for category pages.
        await conn.exec_driver_sql("ANALYZE")
        if not db.is_sqlite:
            for table in (t.categories, t.products, t.variants, t.images, t.collections):
                await conn.execute(
                    sa.text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "  # noqa: S608
                        f"(SELECT MAX(id) FROM {table.name}))"
                    )
                )
    return SeedSummary(
        categories=len(category_rows),
        products=products,
        variants=totals["variants"],
        images=totals["images"],
        collections=len(collection_rows),
    )


# Shipping methods and promo codes of the demo shop (not random: documented in the README).
DEMO_SHIPPING = (
    ("Standard", 499, "US CA MX", 5000),
    ("Express", 1499, "US CA", None),
    ("EU Standard", 899, "DE FR IT ES NL BE AT PL SE DK FI IE PT", 7500),
    ("International", 2499, "GB AU NZ JP CH NO", None),
)
DEMO_PROMOS = (
    # code, kind, value (basis points or minor units), minimum subtotal, usage limit, once each
    ("WELCOME10", "PERCENTAGE", 1000, 0, None, True),
    ("SAVE5", "FIXED", 500, 2500, None, False),
    ("SUMMER25", "PERCENTAGE", 2500, 10000, 1000, False),
)


async def seed_shipping_and_promos(conn: AsyncConnection, *, currency: str) -> None:
    from models.checkout.tables import promo_codes, shipping_methods

    now = BASE_TIME
    await conn.execute(
        shipping_methods.insert(),
        [
            {"name": name, "price_amount": price, "currency": currency, "countries": countries,
             "free_above_amount": free, "created_at": now, "updated_at": now}
            for name, price, countries, free in DEMO_SHIPPING
        ],
    )  # fmt: skip
    await conn.execute(
        promo_codes.insert(),
        [
            {"code": code, "kind": kind, "value": value, "currency": currency,
             "min_subtotal_amount": minimum, "usage_limit": limit, "once_per_customer": once,
             "created_at": now, "updated_at": now}
            for code, kind, value, minimum, limit, once in DEMO_PROMOS
        ],
    )  # fmt: skip
