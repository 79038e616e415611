"""The classification demo: route a customer-support message to one of five intents.

Messages are built from per-intent templates with slots (products, order numbers, amounts, days), so the label
follows from the content, not from a keyword list the model could memorise: the test split uses slot values and
template/slot combinations that the training split never shows. A fresh classification head is at chance (0.2);
a fine-tuned small encoder gets nearly all of it right.

`build_splits(seed)` is deterministic: the same seed always gives the same rows.
"""
from __future__ import annotations

import random
from pathlib import Path

INTENTS: dict[str, list[str]] = {
    "billing": [
        "I was charged {amount} twice for order {order}, please refund one of them.",
        "Why does my invoice show {amount} when the {product} was on sale?",
        "My card was billed {amount} but I cancelled the {product} before it shipped.",
        "Can you send me a corrected invoice for order {order}? The tax on the {product} is wrong.",
        "There is a charge of {amount} from {weekday} on my statement that I do not recognise.",
        "The promo code was not applied and I paid {amount} for the {product}.",
        "How do I change the payment method used for my {product} subscription?",
        "I need a receipt for the {product} I bought {days} days ago for my expenses.",
    ],
    "shipping": [
        "Where is my order {order}? It has not arrived after {days} days.",
        "The tracking for the {product} has not updated since {weekday}.",
        "Can I change the delivery address for order {order} before it ships?",
        "My parcel with the {product} says delivered on {weekday} but nothing is at my door.",
        "How long does express delivery take to {city}?",
        "The courier left a note about order {order} but I was home all {weekday}; when will they try again?",
        "Is it possible to pick up order {order} from a store instead of delivery?",
        "The {product} was supposed to arrive {weekday} and it is still in transit.",
    ],
    "returns": [
        "The {product} from order {order} arrived broken, how do I send it back?",
        "I would like to return the {product} I got {days} days ago; it is not what I expected.",
        "Can I exchange the {product} from order {order} for a different model?",
        "What is the return window for a {product} bought {days} days ago?",
        "I sent back order {order} two weeks ago and have heard nothing about the return.",
        "Do I need the original box to return the {product} from order {order}?",
        "The {product} stopped working after {days} days, can I get a replacement?",
        "Please email me a return label for order {order}.",
    ],
    "account": [
        "I cannot log in on my {device}, the password reset email never arrives.",
        "How do I change the email address on my account to {email}?",
        "Please delete my account {email} and all the data you hold about me.",
        "Someone logged into my account from a {device} on {weekday}; what should I do?",
        "I want to stop the marketing emails sent to {email} but keep my account.",
        "My account got locked after {count} wrong password attempts; how do I unlock it?",
        "Can I merge my accounts, {email} and the old one, so my order history is in one place?",
        "How do I turn on two-factor authentication for logging in on my {device}?",
    ],
    "technical": [
        "The {product} will not pair with my {device} over bluetooth.",
        "After the latest update the {product} keeps restarting every few minutes.",
        "The app crashes on my {device} when I open the settings page.",
        "My {product} shows error code E{code} when I switch it on.",
        "The firmware update for the {product} fails at 50 percent every time.",
        "The {product} does not connect to my wifi even though other devices do.",
        "The battery of the {product} drains in {days} hours, is that normal?",
        "The screen of the {product} flickers whenever it runs for {days} minutes.",
    ],
}

# slot values: the test split draws from the second half of each list, which training never shows
SLOTS: dict[str, list[str]] = {
    "product": ["headphones", "kettle", "laptop stand", "smartwatch", "coffee grinder", "desk lamp", "backpack",
                "speaker", "keyboard", "monitor", "blender", "router", "camera", "e-reader", "fitness band",
                "vacuum", "printer", "tablet", "toaster", "projector"],
    "order": [f"#{n}" for n in (40112, 40587, 41230, 41877, 42011, 42690, 43125, 43788, 44052, 44931,
                                  45210, 45876, 46302, 46999, 47451, 48020, 48765, 49113, 49870, 50234)],
    "amount": ["$19.99", "$24.50", "$35.00", "$42.10", "$58.75", "$64.00", "$79.99", "$88.20", "$99.00", "$120.45",
               "$134.90", "$149.00", "$175.60", "$199.99", "$210.30", "$249.00", "$310.75", "$389.00", "$420.10",
               "$499.99"],
    "days": [str(d) for d in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 18, 20, 21, 25, 28, 30, 45)],
    "weekday": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"] * 2,
    "device": ["phone", "laptop", "tablet", "desktop", "work computer", "smart TV", "old phone", "new laptop",
               "Chromebook", "iPad", "Android phone", "iPhone", "Mac", "Windows PC", "game console", "car screen",
               "kindle", "home hub", "partner's phone", "office PC"],
    "email": [f"{n}@example.{t}" for n, t in (("ana", "com"), ("li.wei", "org"), ("sam", "net"), ("kofi", "com"),
                                              ("maria.k", "org"), ("raj", "net"), ("yuki", "com"), ("tom.b", "org"),
                                              ("ines", "net"), ("omar", "com"), ("zoe", "org"), ("piotr", "net"),
                                              ("amara", "com"), ("chen", "org"), ("lucas", "net"), ("nia", "com"),
                                              ("felix", "org"), ("hana", "net"), ("diego", "com"), ("eva", "org"))],
    "count": [str(c) for c in range(3, 23)],
    "city": ["Leeds", "Lyon", "Porto", "Graz", "Turin", "Gdansk", "Malmo", "Utrecht", "Cork", "Bergen",
             "Seville", "Bremen", "Brno", "Tartu", "Basel", "Ghent", "Aarhus", "Split", "Cluj", "Nantes"],
    "code": [str(c) for c in (11, 12, 17, 21, 23, 31, 34, 42, 45, 51, 56, 61, 63, 72, 77, 81, 84, 90, 93, 98)],
}
SPLIT_SIZES = {"train": 400, "val": 50, "test": 100}


def fill(template: str, rng: random.Random, half: str) -> str:
    values = {}
    for name, options in SLOTS.items():
        mid = len(options) // 2
        pool = options[:mid] if half == "seen" else options[mid:]
        values[name] = rng.choice(pool)
    return template.format(**values)


def build_splits(seed: int = 0, sizes: dict[str, int] = SPLIT_SIZES) -> dict[str, list[dict]]:
    """Balanced splits of {"text", "label"} rows; train and val use the first half of each slot list, test the
    second half, and no text appears in two splits."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {}
    for name, size in sizes.items():
        half = "unseen" if name == "test" else "seen"
        rows: list[dict] = []
        labels = list(INTENTS)
        for attempt in range(1000 * size):
            if len(rows) == size:
                break
            label = labels[len(rows) % len(labels)]
            text = fill(rng.choice(INTENTS[label]), rng, half)
            if text not in seen:
                seen.add(text)
                rows.append({"text": text, "label": label})
        else:
            raise RuntimeError(f"{name}: could not draw {size} distinct rows")
        rng.shuffle(rows)
        splits[name] = rows
    return splits


def write_splits(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    from weitiao.demo import write_split_files

    return write_split_files(out_dir, build_splits(seed))
