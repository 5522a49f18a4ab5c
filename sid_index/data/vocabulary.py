"""The synthetic catalog's vocabulary (`sid_index.data.synthetic`): a 3-level category tree of product nouns,
per-category sizes and materials, colors, fictional brands, shoppers' synonyms, user segments."""

from __future__ import annotations

import numpy as np

# top category -> subcategory -> leaf product nouns (leaf nouns are unique across the tree)
TREE: dict[str, dict[str, list[str]]] = {
    "kitchen": {
        "cookware": ["frying pan", "saucepan", "stock pot", "dutch oven", "wok", "griddle"],
        "bakeware": ["baking sheet", "cake pan", "muffin tin", "loaf pan", "pie dish", "cooling rack"],
        "cutlery": ["chef knife", "paring knife", "bread knife", "knife block", "steak knife set"],
        "small appliances": ["blender", "toaster", "coffee maker", "electric kettle", "stand mixer",
                             "air fryer"],
        "food storage": ["food container", "spice rack", "bread box", "canister set", "lunch box"],
    },
    "furniture": {
        "living room": ["sofa", "armchair", "coffee table", "tv stand", "bookcase", "ottoman"],
        "bedroom": ["bed frame", "nightstand", "dresser", "wardrobe", "headboard"],
        "dining": ["dining table", "dining chair", "bar stool", "sideboard", "dining bench"],
        "home office": ["writing desk", "office chair", "filing cabinet", "standing desk"],
    },
    "bedding & bath": {
        "bedding": ["duvet cover", "sheet set", "bed pillow", "comforter", "mattress topper",
                    "throw blanket"],
        "bath linens": ["bath towel", "bath mat", "shower curtain", "bathrobe", "hand towel"],
        "bathroom storage": ["towel rack", "shower caddy", "vanity cabinet", "laundry hamper"],
    },
    "home decor": {
        "lighting": ["table lamp", "floor lamp", "pendant light", "string lights", "ceiling fan"],
        "wall decor": ["wall mirror", "picture frame", "wall clock", "canvas print", "floating shelf"],
        "rugs": ["area rug", "runner rug", "doormat", "outdoor rug"],
        "accents": ["vase", "candle holder", "throw pillow", "decorative bowl", "plant pot"],
    },
    "clothing": {
        "tops": ["t-shirt", "sweater", "hoodie", "blouse", "polo shirt", "tank top"],
        "bottoms": ["jeans", "chinos", "shorts", "skirt", "leggings", "joggers"],
        "outerwear": ["rain jacket", "parka", "fleece jacket", "puffer vest", "trench coat"],
        "accessories": ["scarf", "beanie", "baseball cap", "belt", "gloves"],
    },
    "shoes": {
        "athletic shoes": ["running shoes", "trail shoes", "tennis shoes", "training shoes"],
        "casual shoes": ["sneakers", "loafers", "slip-on shoes", "boat shoes"],
        "boots": ["hiking boots", "chelsea boots", "rain boots", "work boots", "snow boots"],
        "sandals": ["flip flops", "slides", "sport sandals"],
    },
    "sports & outdoors": {
        "camping": ["tent", "sleeping bag", "camping chair", "cooler", "lantern", "hiking backpack"],
        "fitness": ["yoga mat", "dumbbell set", "kettlebell", "resistance band", "jump rope", "foam roller"],
        "cycling": ["bike helmet", "bike lock", "bike light", "bottle cage", "bike pump"],
        "water sports": ["swim goggles", "life jacket", "kayak paddle", "snorkel set"],
    },
    "tools & hardware": {
        "power tools": ["cordless drill", "circular saw", "orbital sander", "impact driver", "jigsaw"],
        "hand tools": ["hammer", "screwdriver set", "adjustable wrench", "tape measure", "utility knife",
                       "pliers"],
        "tool storage": ["tool box", "tool chest", "pegboard", "tool bag"],
        "workshop": ["workbench", "shop vacuum", "step ladder", "work light"],
    },
    "garden & patio": {
        "patio furniture": ["patio chair", "patio table", "hammock", "porch swing", "patio umbrella"],
        "gardening": ["garden hose", "pruning shears", "watering can", "garden gloves", "wheelbarrow",
                      "raised garden bed"],
        "grills": ["gas grill", "charcoal grill", "grill cover", "smoker", "grill brush"],
        "outdoor decor": ["bird feeder", "planter box", "garden statue", "wind chime"],
    },
    "pet supplies": {
        "dog supplies": ["dog bed", "dog leash", "dog collar", "dog crate", "chew toy", "dog bowl"],
        "cat supplies": ["cat tree", "litter box", "scratching post", "cat carrier", "cat toy"],
        "aquarium": ["fish tank", "aquarium filter", "aquarium heater", "fish net"],
        "pet grooming": ["pet brush", "nail clipper", "grooming glove", "pet shampoo"],
    },
    "toys & games": {
        "building toys": ["building blocks", "marble run", "magnetic tiles", "train set"],
        "outdoor play": ["swing set", "kids scooter", "sandbox", "trampoline"],
        "games & puzzles": ["chess set", "jigsaw puzzle", "card game", "board game"],
        "plush toys": ["teddy bear", "plush unicorn", "stuffed dog", "plush dinosaur"],
    },
    "office supplies": {
        "paper products": ["notebook", "sticky notes", "printer paper", "planner"],
        "desk accessories": ["pen holder", "desk organizer", "monitor stand", "letter tray"],
        "writing": ["ballpoint pen", "gel pen", "fountain pen", "highlighter set", "pencil case"],
    },
    "electronics accessories": {
        "audio": ["headphones", "earbuds", "bluetooth speaker", "soundbar"],
        "charging": ["phone charger", "power bank", "usb cable", "charging stand"],
        "computer accessories": ["laptop sleeve", "wireless mouse", "keyboard", "webcam", "laptop stand"],
        "phone accessories": ["phone case", "screen protector", "phone mount"],
    },
}

# per top category: materials and sizes/variants that make sense there
MATERIALS: dict[str, list[str]] = {
    "kitchen": ["cast iron", "stainless steel", "aluminum", "ceramic", "glass", "bamboo", "silicone",
                "copper"],
    "furniture": ["solid oak", "walnut", "pine", "metal", "rattan", "velvet", "leather", "linen"],
    "bedding & bath": ["cotton", "linen", "bamboo", "microfiber", "flannel", "wool", "teak"],
    "home decor": ["ceramic", "glass", "brass", "rattan", "jute", "wool", "marble", "walnut"],
    "clothing": ["cotton", "wool", "linen", "denim", "fleece", "polyester", "cashmere", "merino"],
    "shoes": ["leather", "suede", "canvas", "mesh", "rubber", "knit"],
    "sports & outdoors": ["nylon", "polyester", "neoprene", "aluminum", "steel", "foam", "rubber"],
    "tools & hardware": ["steel", "chrome vanadium", "fiberglass", "aluminum", "titanium", "plastic"],
    "garden & patio": ["teak", "aluminum", "wicker", "resin", "steel", "cedar"],
    "pet supplies": ["nylon", "plush", "rubber", "stainless steel", "canvas", "sisal"],
    "toys & games": ["wood", "plastic", "plush", "cardboard", "felt"],
    "office supplies": ["kraft", "leather", "bamboo", "metal", "acrylic", "recycled"],
    "electronics accessories": ["silicone", "aluminum", "leather", "nylon", "plastic", "tempered glass"],
}
# per subcategory: sizes/variants
SIZES: dict[str, list[str]] = {
    "cookware": ["8 in", "10 in", "12 in", "3 qt", "5 qt", "7 qt"],
    "bakeware": ["9 x 13 in", "8 in", "12-cup", "half sheet", "set of 2"],
    "cutlery": ["3.5 in", "6 in", "8 in", "10 in", "5-piece", "15-piece"],
    "small appliances": ["compact", "1.7 l", "5 qt", "12-cup", "1000 w"],
    "food storage": ["1 qt", "2 qt", "set of 5", "10-piece", "large"],
    "living room": ["compact", "standard", "oversized", "48 in", "60 in"],
    "bedroom": ["twin", "full", "queen", "king", "3-drawer", "6-drawer"],
    "dining": ["2-seat", "4-seat", "6-seat", "counter height", "bar height", "set of 2"],
    "home office": ["compact", "40 in", "48 in", "60 in", "adjustable"],
    "bedding": ["twin", "full", "queen", "king", "standard", "50 x 60 in"],
    "bath linens": ["standard", "oversized", "20 x 32 in", "72 x 72 in", "set of 2", "set of 6"],
    "bathroom storage": ["small", "medium", "large", "2-tier", "3-tier"],
    "lighting": ["12 in", "24 in", "60 in", "2-pack", "dimmable"],
    "wall decor": ["8 x 10 in", "16 x 20 in", "24 x 36 in", "30 in", "36 in"],
    "rugs": ["2 x 3 ft", "5 x 7 ft", "8 x 10 ft", "2 x 8 ft", "9 x 12 ft"],
    "accents": ["small", "medium", "large", "18 x 18 in", "set of 2", "set of 3"],
    "tops": ["XS", "S", "M", "L", "XL", "XXL"],
    "bottoms": ["XS", "S", "M", "L", "XL", "XXL"],
    "outerwear": ["XS", "S", "M", "L", "XL", "XXL"],
    "accessories": ["one size", "S/M", "L/XL", "34 in", "38 in"],
    "athletic shoes": ["size 7", "size 8", "size 9", "size 10", "size 11", "size 12"],
    "casual shoes": ["size 7", "size 8", "size 9", "size 10", "size 11", "size 12"],
    "boots": ["size 7", "size 8", "size 9", "size 10", "size 11", "wide fit"],
    "sandals": ["size 6", "size 7", "size 8", "size 9", "size 10", "size 11"],
    "camping": ["1-person", "2-person", "4-person", "30 qt", "50 qt", "40 l"],
    "fitness": ["4 mm", "6 mm", "10 lb", "25 lb", "light", "heavy"],
    "cycling": ["small", "medium", "large", "400 lumen", "universal"],
    "water sports": ["adult", "youth", "220 cm", "230 cm", "universal"],
    "power tools": ["12v", "18v", "20v", "7-1/4 in", "5 in", "kit"],
    "hand tools": ["16 oz", "20 oz", "8 in", "25 ft", "6-piece", "32-piece"],
    "tool storage": ["16 in", "22 in", "26 in", "5-drawer", "32 x 48 in"],
    "workshop": ["4 ft", "6 ft", "5 gal", "12 gal", "2-step", "3-step"],
    "patio furniture": ["2-piece set", "4-piece set", "6 ft", "9 ft", "single", "double"],
    "gardening": ["25 ft", "50 ft", "100 ft", "2 gal", "6 cu ft", "4 x 8 ft"],
    "grills": ["2-burner", "3-burner", "4-burner", "18 in", "22 in", "58 in"],
    "outdoor decor": ["small", "large", "24 in", "36 in", "2-pack"],
    "dog supplies": ["small", "medium", "large", "XL", "6 ft", "36 in"],
    "cat supplies": ["small", "large", "36 in", "60 in", "jumbo", "3-pack"],
    "aquarium": ["5 gal", "10 gal", "20 gal", "55 gal", "100 w"],
    "pet grooming": ["small", "large", "16 oz", "one size"],
    "building toys": ["100-piece", "250-piece", "500-piece", "ages 3+", "ages 6+"],
    "outdoor play": ["ages 3+", "ages 6+", "8 ft", "12 ft", "14 ft"],
    "games & puzzles": ["500-piece", "1000-piece", "travel size", "deluxe edition", "family edition"],
    "plush toys": ["8 in", "12 in", "18 in", "24 in", "jumbo"],
    "paper products": ["A5", "A4", "letter size", "3 x 3 in", "12-pack", "500 sheets"],
    "desk accessories": ["small", "large", "2-tier", "3-tier", "adjustable"],
    "writing": ["0.5 mm", "0.7 mm", "1.0 mm", "fine point", "12-pack", "24-pack"],
    "audio": ["wireless", "wired", "over-ear", "portable", "2.1 channel"],
    "charging": ["20 w", "65 w", "3 ft", "6 ft", "10000 mAh", "20000 mAh"],
    "computer accessories": ["13 in", "15 in", "16 in", "full size", "compact", "1080p"],
    "phone accessories": ["6.1 in", "6.7 in", "2-pack", "universal"],
}
COLORS = ["black", "white", "gray", "navy", "red", "blue", "green", "olive", "beige", "brown",
          "pink", "yellow", "orange", "purple", "teal", "charcoal", "ivory", "silver"]
COLOR_WEIGHTS = np.array([6, 5, 4, 3, 3, 3, 2, 1, 2, 2, 1, 1, 1, 1, 1, 2, 1, 1], dtype=np.float64)
# fictional brands; each top category sells a seeded subset of them
BRANDS = ["Acme", "Northwind", "Bellhaven", "Cobalt & Co", "Evergrove", "Fable", "Granite Peak",
          "Harbor Lane", "Ironwood", "Juniper", "Kestrel", "Lumen", "Maple Row", "Nimbus", "Oakridge",
          "Pinecrest", "Quill", "Redfern", "Summit", "Tidewater", "Vantage", "Willow & Pine", "Zephyr",
          "Alder", "Brightline", "Copperleaf", "Driftwood", "Emberly", "Foxglove", "Glenmoor", "Hollis",
          "Inkwell", "Larkspur", "Meridian", "Northstar", "Orchard", "Pebble", "Ridgeway", "Saltbox",
          "Thistle", "Upland", "Verity", "Wrenfield"]
BRANDS_PER_TOP = (8, 14)
# what shoppers type instead (query noise)
SYNONYMS: dict[str, list[str]] = {
    "frying pan": ["skillet"], "saucepan": ["sauce pot"], "sofa": ["couch"], "armchair": ["accent chair"],
    "tv stand": ["media console"], "nightstand": ["bedside table"], "dresser": ["chest of drawers"],
    "duvet cover": ["comforter cover"], "throw blanket": ["throw"], "bath towel": ["towel"],
    "area rug": ["carpet"], "doormat": ["welcome mat"], "t-shirt": ["tee"], "hoodie": ["sweatshirt"],
    "sweater": ["jumper", "pullover"], "jeans": ["denim pants"], "sneakers": ["trainers"],
    "running shoes": ["runners"], "flip flops": ["thongs"], "dumbbell set": ["free weights"],
    "cordless drill": ["power drill"], "garden hose": ["water hose"], "earbuds": ["wireless earphones"],
    "power bank": ["portable charger"], "headphones": ["headset"], "cooler": ["ice chest"],
    "gray": ["grey"], "navy": ["dark blue"], "charcoal": ["dark gray"], "ivory": ["cream"],
    "stainless steel": ["stainless"], "aluminum": ["aluminium"], "wheelbarrow": ["garden cart"],
}
SEGMENTS = ("new", "casual", "regular", "power")
ATTRS = ("brand", "color", "material")


def _flatten_tree() -> tuple[list[str], list[str], list[str], np.ndarray, np.ndarray]:
    tops, subs, leaves, sub_top, leaf_sub = list(TREE), [], [], [], []
    for t, top in enumerate(tops):
        for sub, nouns in TREE[top].items():
            for noun in nouns:
                leaves.append(noun)
                leaf_sub.append(len(subs))
            subs.append(sub)
            sub_top.append(t)
    assert len(set(leaves)) == len(leaves) and len(set(subs)) == len(subs), "names must be unique"
    assert set(subs) == set(SIZES) and set(tops) == set(MATERIALS), "every category needs its vocabulary"
    return tops, subs, leaves, np.array(sub_top), np.array(leaf_sub)


TOPS, SUBS, LEAVES, SUB_TOP, LEAF_SUB = _flatten_tree()
LEAF_TOP = SUB_TOP[LEAF_SUB]
MATERIAL_NAMES = sorted({m for ms in MATERIALS.values() for m in ms})
SIZE_NAMES = sorted({s for ss in SIZES.values() for s in ss})
