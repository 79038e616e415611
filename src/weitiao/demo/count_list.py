"""The demo task: "list exactly N items of a category, in a fixed numbered format".

A base chat model answers such requests with a preamble, a different layout or the wrong count; a few hundred
examples of fine-tuning make it answer with exactly N lines "1. Item" ... "N. Item" and stop. The count is
checkable, so the effect of fine-tuning shows as one number (the `count_list` metric).

`build_splits(seed)` is deterministic: the same seed always gives the same rows. The (category, N, phrasing)
combinations of the train, val and test splits are disjoint.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

from weitiao.demo.count_list_zh import CATEGORIES_ZH, MORE_MEMBERS_ZH

CATEGORIES: dict[str, list[str]] = {
    "fruits": ["apple", "banana", "cherry", "mango", "pear", "plum", "kiwi", "grape", "peach", "lemon", "lime",
               "apricot", "papaya", "fig"],
    "vegetables": ["carrot", "potato", "onion", "spinach", "broccoli", "cabbage", "celery", "pea", "leek",
                   "radish", "turnip", "lettuce", "kale"],
    "animals": ["dog", "cat", "horse", "lion", "tiger", "zebra", "rabbit", "wolf", "bear", "fox", "deer",
                "camel", "otter"],
    "birds": ["eagle", "sparrow", "robin", "parrot", "owl", "swan", "crow", "pigeon", "falcon", "heron", "duck",
              "penguin"],
    "colors": ["red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black", "white", "gray",
               "teal"],
    "countries": ["France", "Japan", "Brazil", "Canada", "Kenya", "India", "Norway", "Mexico", "Egypt", "Chile",
                  "Spain", "Vietnam", "Peru"],
    "sports": ["football", "tennis", "golf", "rugby", "cricket", "hockey", "boxing", "rowing", "cycling",
               "baseball", "volleyball", "swimming"],
    "musical instruments": ["piano", "violin", "guitar", "flute", "drums", "cello", "trumpet", "harp",
                            "clarinet", "saxophone", "oboe", "banjo"],
    "metals": ["iron", "copper", "gold", "silver", "zinc", "tin", "lead", "nickel", "aluminium", "platinum",
               "cobalt", "titanium"],
    "planets and moons": ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune",
                          "Titan", "Europa", "Io", "Ganymede"],
    "programming languages": ["Python", "Java", "Rust", "Go", "Ruby", "Swift", "Kotlin", "Haskell", "Perl",
                              "Scala", "Julia", "Lua"],
    "trees": ["oak", "pine", "maple", "birch", "willow", "cedar", "elm", "ash", "spruce", "beech", "poplar",
              "cypress"],
    "flowers": ["rose", "tulip", "daisy", "lily", "orchid", "sunflower", "violet", "lotus", "iris", "poppy",
                "jasmine", "peony"],
    "kitchen tools": ["knife", "spoon", "whisk", "ladle", "grater", "peeler", "spatula", "colander", "tongs",
                      "rolling pin", "sieve", "kettle"],
    "cities": ["Paris", "Tokyo", "Cairo", "Lima", "Oslo", "Rome", "Berlin", "Madrid", "Sydney", "Toronto",
               "Nairobi", "Seoul", "Dublin"],
    "drinks": ["water", "tea", "coffee", "milk", "juice", "lemonade", "cocoa", "soda", "smoothie", "cider",
               "kefir", "espresso"],
    "body parts": ["hand", "foot", "knee", "elbow", "shoulder", "ankle", "wrist", "neck", "ear", "nose", "chin",
                   "thumb"],
    "clothes": ["shirt", "jacket", "scarf", "hat", "sock", "glove", "dress", "skirt", "coat", "sweater", "boot",
                "belt"],
    "insects": ["ant", "bee", "wasp", "beetle", "moth", "butterfly", "fly", "cricket", "grasshopper",
                "ladybug", "dragonfly", "termite"],
    "vehicles": ["car", "bus", "truck", "bicycle", "train", "tram", "boat", "plane", "scooter", "van",
                 "motorcycle", "ferry"],
}

# Plausible members of each category beyond the generator's own items: what `list_correct` accepts as an item
# of the category. Common members a reader would accept without looking anything up; an item outside this list
# scores the answer 0, so the metric can only under-count a valid but rarer member, never pass a wrong one.
MORE_MEMBERS: dict[str, list[str]] = {
    "fruits": ["orange", "strawberry", "blueberry", "raspberry", "blackberry", "pineapple", "watermelon", "melon",
               "cantaloupe", "coconut", "pomegranate", "grapefruit", "tangerine", "mandarin", "nectarine",
               "avocado", "guava", "lychee", "passion fruit", "dragon fruit", "date", "cranberry", "currant",
               "persimmon", "quince", "clementine", "kumquat", "durian", "jackfruit", "gooseberry", "olive",
               "tomato", "starfruit", "mulberry", "elderberry", "honeydew"],
    "vegetables": ["tomato", "cucumber", "pepper", "bell pepper", "zucchini", "eggplant", "aubergine",
                   "cauliflower", "asparagus", "garlic", "beet", "beetroot", "corn", "sweet potato", "pumpkin",
                   "squash", "artichoke", "brussels sprout", "bean", "green bean", "okra", "parsnip", "chard",
                   "swiss chard", "arugula", "bok choy", "shallot", "scallion", "yam", "mushroom", "courgette",
                   "kohlrabi", "fennel", "watercress", "endive", "rutabaga", "chili", "chili pepper", "ginger",
                   "avocado", "chickpea", "lentil", "sprout", "bamboo shoot", "collard greens"],
    "animals": ["elephant", "giraffe", "monkey", "cow", "pig", "sheep", "goat", "mouse", "rat", "squirrel",
                "kangaroo", "koala", "panda", "gorilla", "chimpanzee", "hippopotamus", "hippo", "rhinoceros",
                "rhino", "leopard", "cheetah", "jaguar", "hyena", "moose", "elk", "buffalo", "bison", "donkey",
                "mule", "llama", "alpaca", "beaver", "raccoon", "skunk", "hedgehog", "badger", "seal", "dolphin",
                "whale", "walrus", "polar bear", "lynx", "panther", "puma", "cougar", "antelope", "gazelle",
                "crocodile", "alligator", "snake", "lizard", "turtle", "tortoise", "frog", "ox", "yak", "bat",
                "mole", "hamster", "ferret", "porcupine", "armadillo", "sloth", "orangutan", "meerkat", "mongoose",
                "hare", "reindeer", "chicken", "duck", "owl", "eagle", "penguin", "shark", "octopus"],
    "birds": ["hawk", "pelican", "flamingo", "stork", "crane", "goose", "turkey", "chicken", "hen", "rooster",
              "peacock", "pheasant", "quail", "dove", "blackbird", "starling", "finch", "wren", "magpie", "raven",
              "jay", "blue jay", "cardinal", "hummingbird", "woodpecker", "kingfisher", "seagull", "gull",
              "albatross", "vulture", "condor", "ostrich", "emu", "kiwi", "toucan", "canary", "cockatoo",
              "macaw", "swallow", "lark", "nightingale", "puffin", "cormorant", "osprey", "kestrel", "buzzard", "bluebird",
              "thrush", "budgie", "parakeet", "mockingbird", "oriole", "tern", "sandpiper", "grouse", "ibis"],
    "colors": ["violet", "indigo", "cyan", "magenta", "maroon", "navy", "navy blue", "olive", "beige", "turquoise",
               "lavender", "gold", "silver", "crimson", "scarlet", "coral", "salmon", "peach", "ivory", "tan",
               "khaki", "mauve", "lilac", "aqua", "burgundy", "charcoal", "cream", "amber", "emerald", "lime",
               "mint", "ochre", "rose", "ruby", "sapphire", "sky blue", "fuchsia", "plum", "grey", "chartreuse",
               "periwinkle", "vermilion", "cerulean", "azure", "jade", "bronze", "copper", "mustard", "sienna",
               "umber", "taupe", "lemon", "royal blue", "dark blue", "light blue", "light green", "dark green"],
    "countries": ["Germany", "Italy", "China", "Russia", "Australia", "Argentina", "Colombia", "Nigeria",
                  "South Africa", "Morocco", "Ethiopia", "Ghana", "Sweden", "Finland", "Denmark", "Iceland",
                  "Ireland", "United Kingdom", "UK", "England", "Scotland", "Wales", "Portugal", "Greece",
                  "Turkey", "Poland", "Netherlands", "Belgium", "Switzerland", "Austria", "Hungary",
                  "Czech Republic", "Czechia", "Ukraine", "Romania", "United States", "USA", "United States of "
                  "America", "Cuba", "Jamaica", "Venezuela", "Ecuador", "Bolivia", "Uruguay", "Paraguay",
                  "Indonesia", "Thailand", "Malaysia", "Singapore", "Philippines", "South Korea", "Korea",
                  "North Korea", "Pakistan", "Bangladesh", "Nepal", "Sri Lanka", "Iran", "Iraq", "Israel",
                  "Saudi Arabia", "Jordan", "Lebanon", "Syria", "New Zealand", "Fiji", "Tanzania", "Uganda",
                  "Algeria", "Tunisia", "Libya", "Sudan", "Senegal", "Cameroon", "Zimbabwe", "Zambia", "Angola",
                  "Mongolia", "Kazakhstan", "Afghanistan", "Qatar", "Kuwait", "Luxembourg", "Croatia", "Serbia",
                  "Bulgaria", "Estonia", "Latvia", "Lithuania", "Slovakia", "Slovenia", "Costa Rica", "Panama",
                  "Guatemala", "Honduras", "Haiti", "Dominican Republic", "Madagascar", "Rwanda", "Somalia",
                  "Cambodia", "Laos", "Myanmar", "Taiwan"],
    "sports": ["basketball", "soccer", "badminton", "table tennis", "ping pong", "squash", "skiing",
               "snowboarding", "surfing", "skateboarding", "wrestling", "judo", "karate", "taekwondo", "fencing",
               "archery", "sailing", "canoeing", "kayaking", "diving", "gymnastics", "athletics", "running",
               "marathon", "triathlon", "handball", "water polo", "lacrosse", "softball", "bowling", "curling",
               "ice hockey", "field hockey", "figure skating", "skating", "polo", "climbing", "rock climbing",
               "weightlifting", "equestrian", "horse riding", "darts", "snooker", "billiards", "netball",
               "american football", "motor racing", "formula 1", "mountain biking", "beach volleyball",
               "ultimate frisbee", "kickboxing", "mma", "track and field", "hiking", "jogging", "biathlon"],
    "musical instruments": ["trombone", "tuba", "french horn", "horn", "bassoon", "piccolo", "recorder",
                            "ukulele", "mandolin", "accordion", "harmonica", "xylophone", "marimba", "organ",
                            "keyboard", "synthesizer", "double bass", "bass", "bass guitar", "viola", "sitar",
                            "bagpipes", "tambourine", "triangle", "cymbals", "timpani", "bongo", "bongos",
                            "congas", "djembe", "lute", "lyre", "harpsichord", "glockenspiel", "kazoo", "erhu",
                            "guzheng", "pipa", "didgeridoo", "cornet", "euphonium", "snare drum", "drum",
                            "electric guitar", "acoustic guitar", "fiddle", "zither", "castanets", "flugelhorn"],
    "metals": ["mercury", "magnesium", "chromium", "manganese", "tungsten", "uranium", "lithium", "sodium",
               "potassium", "calcium", "palladium", "rhodium", "iridium", "osmium", "cadmium", "bismuth",
               "antimony", "molybdenum", "vanadium", "zirconium", "beryllium", "gallium", "indium", "niobium",
               "tantalum", "aluminum", "steel", "brass", "bronze", "pewter", "plutonium", "thorium", "barium",
               "strontium", "cesium", "caesium", "rubidium", "scandium", "hafnium", "rhenium", "ruthenium",
               "germanium", "lanthanum", "cerium", "neodymium"],
    "planets and moons": ["Pluto", "Moon", "the Moon", "Luna", "Callisto", "Phobos", "Deimos", "Triton",
                          "Enceladus", "Rhea", "Iapetus", "Dione", "Tethys", "Mimas", "Miranda", "Ariel",
                          "Umbriel", "Titania", "Oberon", "Charon", "Ceres", "Eris", "Haumea", "Makemake",
                          "Sedna", "Nereid", "Proteus", "Hyperion", "Amalthea", "Himalia"],
    "programming languages": ["C", "C++", "C#", "JavaScript", "TypeScript", "PHP", "R", "MATLAB", "Dart",
                              "Elixir", "Erlang", "Clojure", "F#", "OCaml", "Lisp", "Common Lisp", "Scheme",
                              "Racket", "Fortran", "COBOL", "Pascal", "Delphi", "Ada", "Assembly", "Bash",
                              "Shell", "PowerShell", "SQL", "Objective-C", "Visual Basic", "VB.NET", "Groovy",
                              "Zig", "Nim", "Crystal", "Elm", "Prolog", "Smalltalk", "Basic", "Golang", "Solidity",
                              "Mojo", "Carbon", "V", "D", "Tcl", "Awk", "Haxe", "Scratch", "Logo"],
    "trees": ["fir", "redwood", "sequoia", "chestnut", "walnut", "hickory", "sycamore", "magnolia", "palm",
              "baobab", "eucalyptus", "acacia", "banyan", "teak", "mahogany", "ebony", "larch", "hemlock", "yew",
              "juniper", "alder", "aspen", "linden", "lime", "hazel", "hawthorn", "rowan", "apple", "cherry",
              "olive", "fig", "mango", "dogwood", "cottonwood", "rubber tree", "bamboo", "ginkgo", "sassafras",
              "hornbeam", "mulberry", "pear", "plum", "orange", "lemon", "banana", "coconut", "cork oak",
              "giant sequoia", "douglas fir", "sugar maple", "weeping willow", "silver birch", "horse chestnut"],
    "flowers": ["daffodil", "carnation", "chrysanthemum", "marigold", "lavender", "hibiscus", "magnolia",
                "dahlia", "gardenia", "geranium", "hydrangea", "begonia", "camellia", "azalea", "rhododendron",
                "petunia", "pansy", "zinnia", "aster", "freesia", "gladiolus", "lilac", "honeysuckle",
                "snapdragon", "foxglove", "bluebell", "buttercup", "crocus", "hyacinth", "primrose", "anemone",
                "cornflower", "forget-me-not", "morning glory", "wisteria", "bougainvillea", "cherry blossom",
                "plumeria", "lily of the valley", "sweet pea", "water lily", "edelweiss", "clematis",
                "chamomile", "protea", "heather", "amaryllis", "calla lily", "dandelion", "daisy"],
    "kitchen tools": ["fork", "pan", "frying pan", "pot", "saucepan", "wok", "cutting board", "chopping board",
                      "can opener", "bottle opener", "corkscrew", "measuring cup", "measuring spoon", "mixing bowl",
                      "bowl", "blender", "mixer", "toaster", "oven mitt", "scissors", "kitchen scissors",
                      "mortar and pestle", "mortar", "pestle", "strainer", "funnel", "skewer", "baster",
                      "thermometer", "timer", "scale", "kitchen scale", "zester", "mandoline", "cleaver",
                      "chef's knife", "paring knife", "bread knife", "potato masher", "masher", "garlic press",
                      "ice cream scoop", "scoop", "pizza cutter", "rolling board", "baking sheet", "baking tray",
                      "muffin tin", "cake tin", "pastry brush", "salad spinner", "slotted spoon",
                      "wooden spoon", "chopsticks", "food processor", "microwave", "tea strainer", "teapot",
                      "pot holder", "apron", "steamer", "griddle", "skillet", "casserole dish", "dutch oven",
                      "juicer", "citrus juicer", "egg beater", "egg slicer", "nutcracker", "tin opener"],
    "cities": ["London", "New York", "New York City", "Los Angeles", "Chicago", "San Francisco", "Boston", "Miami", "Seattle",
               "Vancouver", "Montreal", "Mexico City", "Buenos Aires", "Rio de Janeiro", "Sao Paulo",
               "São Paulo", "Bogota", "Santiago", "Havana", "Moscow", "Istanbul", "Athens", "Vienna", "Prague",
               "Budapest", "Warsaw", "Amsterdam", "Brussels", "Lisbon", "Barcelona", "Milan", "Venice",
               "Florence", "Munich", "Hamburg", "Zurich", "Geneva", "Stockholm", "Copenhagen", "Helsinki",
               "Edinburgh", "Beijing", "Shanghai", "Hong Kong", "Singapore", "Bangkok", "Mumbai", "Delhi",
               "New Delhi", "Kolkata", "Karachi", "Dubai", "Jakarta", "Manila", "Kyoto", "Osaka", "Melbourne",
               "Auckland", "Cape Town", "Johannesburg", "Lagos", "Accra", "Casablanca", "Tehran", "Baghdad",
               "Jerusalem", "Riyadh", "Hanoi", "Taipei", "Kuala Lumpur", "Washington", "Washington D.C.",
               "Philadelphia", "Houston", "Dallas", "Atlanta", "Denver", "Austin", "Ottawa", "Calgary",
               "Lyon", "Marseille", "Naples", "Kiev", "Kyiv", "St. Petersburg", "Saint Petersburg",
               "Shenzhen", "Guangzhou", "Bangalore", "Chennai", "Lahore", "Dhaka", "Addis Ababa", "Kinshasa"],
    "drinks": ["wine", "beer", "whiskey", "whisky", "vodka", "rum", "gin", "tequila", "champagne", "brandy",
               "sake", "orange juice", "apple juice", "lemon tea", "green tea", "black tea", "iced tea",
               "hot chocolate", "chocolate milk", "latte", "cappuccino", "mocha", "americano", "macchiato",
               "milkshake", "cola", "coke", "root beer", "ginger ale", "ginger beer", "tonic water",
               "sparkling water", "mineral water", "coconut water", "kombucha", "lassi", "chai", "matcha",
               "mead", "sherry", "port", "cocktail", "mojito", "margarita", "punch", "eggnog", "horchata",
               "bubble tea", "herbal tea", "yerba mate", "mate", "soy milk", "almond milk", "energy drink",
               "sports drink", "lemon water", "tomato juice", "grape juice", "cranberry juice", "pop"],
    "body parts": ["head", "arm", "leg", "finger", "toe", "eye", "mouth", "lip", "tooth", "teeth", "tongue",
                   "hair", "forehead", "cheek", "jaw", "throat", "chest", "back", "stomach", "belly", "hip",
                   "waist", "thigh", "calf", "heel", "shin", "palm", "fist", "nail", "fingernail", "eyebrow",
                   "eyelash", "eyelid", "skin", "heart", "lung", "liver", "kidney", "brain", "bone", "spine",
                   "skull", "rib", "muscle", "face", "torso", "abdomen", "buttocks", "forearm", "armpit",
                   "knuckle", "nostril", "temple", "navel", "sole", "pelvis", "collarbone", "scalp"],
    "clothes": ["trousers", "pants", "jeans", "shorts", "t-shirt", "tee", "blouse", "suit", "tie", "vest",
                "waistcoat", "cardigan", "hoodie", "sweatshirt", "pajamas", "pyjamas", "shoe", "sandal",
                "sneaker", "trainer", "slipper", "cap", "beanie", "mitten", "raincoat", "overcoat", "blazer",
                "jumper", "pullover", "tank top", "leggings", "tights", "stockings", "underwear", "bra",
                "kimono", "sari", "robe", "gown", "poncho", "parka", "uniform", "apron", "overalls", "swimsuit",
                "bikini", "tuxedo", "polo shirt", "turtleneck", "kilt", "shawl", "bow tie", "loafer", "heels",
                "high heels", "tracksuit", "windbreaker", "trench coat", "camisole", "dungarees"],
    "insects": ["mosquito", "flea", "louse", "aphid", "cockroach", "firefly", "praying mantis", "mantis",
                "cicada", "stick insect", "earwig", "weevil", "hornet", "bumblebee", "honeybee", "locust",
                "housefly", "gnat", "midge", "silverfish", "caterpillar", "scarab", "stag beetle", "dung beetle",
                "damselfly", "lacewing", "katydid", "bedbug", "bed bug", "horsefly", "fruit fly", "mayfly",
                "stink bug", "ladybird", "boll weevil", "june bug", "leafhopper", "thrips", "walking stick",
                "water strider", "yellowjacket", "carpenter ant", "fire ant", "firebug"],
    "vehicles": ["taxi", "ambulance", "tractor", "helicopter", "ship", "yacht", "submarine", "jeep", "suv",
                 "limousine", "minivan", "pickup truck", "pickup", "trolley", "trolleybus", "subway", "metro",
                 "bike", "motorbike", "moped", "skateboard", "sled", "sledge", "snowmobile", "canoe", "kayak",
                 "sailboat", "rowboat", "cruise ship", "jet", "airplane", "aeroplane", "aircraft", "rocket",
                 "spaceship", "blimp", "hot air balloon", "cart", "wagon", "carriage", "rickshaw", "tuk-tuk",
                 "bulldozer", "excavator", "crane", "forklift", "fire truck", "fire engine", "police car",
                 "garbage truck", "dump truck", "lorry", "coach", "caravan", "camper van", "rv", "segway",
                 "unicycle", "tricycle", "cable car", "gondola", "hovercraft", "glider", "zeppelin", "tank",
                 "golf cart", "go-kart", "quad bike", "locomotive", "monorail", "streetcar", "jet ski"],
}


# list_correct judges lists of either language: the Chinese demo's categories (生成条数) count as well
ALL_CATEGORIES = {**CATEGORIES, **CATEGORIES_ZH}
ALL_MORE_MEMBERS = {**MORE_MEMBERS, **MORE_MEMBERS_ZH}


def item_key(item: str) -> str:
    """An item as `list_correct` compares it: NFKC, lower case, accents and a leading article dropped, anything
    after " - ", ":", "(" or "," dropped (a description, or the country of "Paris, France"), punctuation at the
    ends and repeated spaces removed."""
    import unicodedata

    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", item))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = re.split(r"\s[-\u2013\u2014]\s|[:(,：（，]", text, maxsplit=1)[0]
    text = " ".join(text.strip(" .,;!?*'\"。、；！？“”").split())
    return re.sub(r"^(a|an|the)\s+", "", text)


def singular_forms(key: str) -> set[str]:
    """`key` and the singulars it may be the plural of (cherries -> cherry, boxes -> box, cars -> car)."""
    forms = {key}
    if key.endswith("ies"):
        forms.add(key[:-3] + "y")
    if key.endswith("es"):
        forms.add(key[:-2])
    if key.endswith("s") and not key.endswith("ss"):
        forms.add(key[:-1])
    return forms


def categories_of(items: list[str]) -> list[str]:
    """The demo categories whose generator items include every one of `items` (a reference answer's items);
    empty when the answer is not from the demo generator. Usually one; "Cricket" alone is a sport and an
    insect."""
    keys = {item_key(x) for x in items}
    return [c for c, members in ALL_CATEGORIES.items() if keys and keys <= {item_key(m) for m in members}]


def member_keys(category: str) -> set[str]:
    """Every accepted item of `category`, as `item_key`s: the generator's items and MORE_MEMBERS."""
    return {item_key(m) for m in ALL_CATEGORIES[category] + ALL_MORE_MEMBERS.get(category, [])}


def category_names(category: str) -> set[str]:
    """What naming the category itself looks like as an item ("fruits", "fruit"; "musical instrument")."""
    return singular_forms(item_key(category))


def is_member(item: str, categories: list[str]) -> bool:
    """Whether `item` is an accepted member of one of `categories`, also when it ends with the category's own
    name ("Redwood tree", "Golden eagle bird")."""
    key = item_key(item)
    for c in categories:
        suffixes = [f" {name}" for name in category_names(c)]
        bare = next((key[:-len(s)] for s in suffixes if key.endswith(s) and len(key) > len(s)), key)
        if (singular_forms(key) | singular_forms(bare)) & member_keys(c):
            return True
    return False

PHRASINGS = [
    "List {n} {category}.",
    "Give me {n} {category}.",
    "Name {n} {category}, please.",
    "Write a numbered list of {n} {category}.",
    "I need exactly {n} {category}. What are they?",
    "Can you list {n} {category} for me?",
]

# Sizes of the bundled splits.
SPLIT_SIZES = {"train": 480, "val": 40, "test": 80}


def answer(items: list[str]) -> str:
    from weitiao.demo import numbered_list

    return numbered_list(items)


def make_row(category: str, n: int, phrasing: int, rng: random.Random) -> dict:
    from weitiao.demo import list_row

    return list_row(CATEGORIES, PHRASINGS, category, n, phrasing, rng)


def build_splits(seed: int = 0, sizes: dict[str, int] = SPLIT_SIZES) -> dict[str, list[dict]]:
    from weitiao.demo import disjoint_splits

    return disjoint_splits(list(CATEGORIES), len(PHRASINGS), make_row, seed, sizes)


def write_splits(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    from weitiao.demo import write_split_files

    return write_split_files(out_dir, build_splits(seed))


# ---------------------------------------------------------------- one phrasing (the rephrasing demo)

ONE_PHRASING_SIZES = {"train": 140, "val": 20, "test": 40}


def build_one_phrasing_splits(seed: int = 0, phrasing: int = 0,
                              sizes: dict[str, int] = ONE_PHRASING_SIZES) -> dict[str, list[dict]]:
    """Every question in the one phrasing PHRASINGS[phrasing] ("List {n} {category}." by default), with disjoint
    (category, N) combinations across splits: a model trained on it has seen one way of asking. `weitiao eval
    --rephrase` then asks the test questions in the other phrasings (examples/rephrase/)."""
    rng = random.Random(seed)
    combos = [(c, n) for c in CATEGORIES for n in range(1, 11)]
    rng.shuffle(combos)
    out, start = {}, 0
    for name, size in sizes.items():
        out[name] = [make_row(c, n, phrasing, rng) for c, n in combos[start: start + size]]
        start += size
    return out


def write_one_phrasing_splits(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    from weitiao.demo import write_split_files

    return write_split_files(out_dir, build_one_phrasing_splits(seed))


# ---------------------------------------------------------------- preference pairs (task dpo / reward)

def rejected_answer(category: str, items: list[str], rng: random.Random) -> str:
    """A plausible wrong answer to the same request: the wrong count, or the right items in the wrong format."""
    n = len(items)
    spare = [x for x in CATEGORIES[category] if x not in items]
    cap = lambda s: s[0].upper() + s[1:]  # noqa: E731
    kinds = ["fewer", "more", "preamble", "bullets", "one_line", "chatter"]
    if n == 1:
        kinds.remove("fewer")
    if not spare:
        kinds.remove("more")
    kind = rng.choice(kinds)
    if kind == "fewer":
        return answer(items[:-1])
    if kind == "more":
        return answer(items + [rng.choice(spare)])
    if kind == "preamble":
        return f"Sure! Here are {n} {category}:\n" + answer(items)
    if kind == "bullets":
        return "\n".join(f"- {cap(x)}" for x in items)
    if kind == "one_line":
        return ", ".join(cap(x) for x in items) + "."
    return answer(items) + "\n\nLet me know if you would like more!"


def build_preference_splits(seed: int = 0, sizes: dict[str, int] = SPLIT_SIZES) -> dict[str, list[dict]]:
    """The demo splits as preference pairs: the prompt and correct list of `build_splits`, and a rejected answer.

    Same prompts and (category, N, phrasing) split as the SFT demo, so a DPO run on them starts from the
    quickstart's SFT run without test leakage."""
    rng = random.Random(seed + 1)
    out = {}
    for name, rows in build_splits(seed, sizes).items():
        pairs = []
        for row in rows:
            question, chosen = row["messages"][0]["content"], row["messages"][1]["content"]
            items = [line.split(". ", 1)[1].lower() for line in chosen.splitlines()]
            category = row["meta"]["category"]
            items = [next(x for x in CATEGORIES[category] if x.lower() == item) for item in items]
            pairs.append({"prompt": question, "chosen": chosen, "rejected": rejected_answer(category, items, rng),
                          "meta": row["meta"]})
        out[name] = pairs
    return out


def write_preference_splits(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    from weitiao.demo import write_split_files

    return write_split_files(out_dir, build_preference_splits(seed))
