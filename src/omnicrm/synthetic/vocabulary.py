"""Readable vocabularies of the synthetic world: categories, names, e-mail domains, UK regions.

Data only, no logic. The numbers are plausible orders of magnitude for a UK general retailer,
chosen by hand so that baskets, prices and returns look like a real omni-channel business.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Category(NamedTuple):
    """A product category and the shape of its prices, margins and returns."""

    name: str
    median_price: float  # median list price in GBP
    price_spread: float  # sigma of log price within the category
    margin_rate: float  # typical gross margin rate
    return_rate: float  # probability a sold line is returned
    popularity: float  # relative weight in people's category preferences


CATEGORIES: Final[tuple[Category, ...]] = (
    Category("Womenswear", 35.0, 0.55, 0.55, 0.20, 1.6),
    Category("Menswear", 38.0, 0.50, 0.52, 0.15, 1.1),
    Category("Footwear", 55.0, 0.45, 0.48, 0.18, 1.0),
    Category("Beauty", 16.0, 0.50, 0.62, 0.03, 1.2),
    Category("Home & Kitchen", 28.0, 0.70, 0.42, 0.06, 1.1),
    Category("Electronics", 120.0, 0.90, 0.18, 0.08, 0.8),
    Category("Grocery", 4.5, 0.50, 0.25, 0.01, 1.3),
    Category("Kidswear", 18.0, 0.45, 0.50, 0.10, 0.9),
    Category("Accessories", 22.0, 0.60, 0.60, 0.08, 0.8),
    Category("Toys", 20.0, 0.60, 0.40, 0.05, 0.7),
    Category("Sports & Outdoors", 40.0, 0.70, 0.40, 0.09, 0.7),
    Category("Health", 9.0, 0.50, 0.45, 0.02, 0.7),
    Category("Books", 9.0, 0.35, 0.30, 0.02, 0.6),
    Category("Fragrance", 48.0, 0.40, 0.45, 0.03, 0.6),
    Category("Lingerie", 24.0, 0.40, 0.58, 0.12, 0.6),
    Category("Garden", 25.0, 0.70, 0.40, 0.04, 0.5),
    Category("Pet Supplies", 14.0, 0.60, 0.35, 0.02, 0.5),
    Category("Jewellery", 65.0, 0.70, 0.60, 0.07, 0.4),
    Category("Stationery", 6.0, 0.50, 0.50, 0.02, 0.4),
    Category("Furniture", 180.0, 0.60, 0.38, 0.06, 0.3),
    Category("Bedding & Bath", 30.0, 0.50, 0.48, 0.06, 0.5),
    Category("Lighting", 40.0, 0.60, 0.45, 0.06, 0.3),
    Category("Luggage", 70.0, 0.50, 0.45, 0.07, 0.3),
    Category("Music & Games", 25.0, 0.50, 0.28, 0.04, 0.5),
)

# Distinct first names: no two are one edit apart, so household members stay distinguishable.
FIRST_NAMES: Final[tuple[str, ...]] = (
    "Oliver", "George", "Harry", "Jack", "Jacob", "Noah", "Charlie", "Thomas", "Oscar", "William",
    "James", "Henry", "Leo", "Alfie", "Joshua", "Freddie", "Archie", "Ethan", "Isaac", "Alexander",
    "Joseph", "Edward", "Samuel", "Max", "Daniel", "Arthur", "Lucas", "Mohammed", "Logan", "Theo",
    "Harrison", "Benjamin", "Mason", "Sebastian", "Finley", "Adam", "Dylan", "Zachary", "Riley",
    "Teddy", "Jake", "Toby", "Luke", "Matthew", "Elliot", "Reuben", "Callum", "Michael", "Robert",
    "David", "Richard", "Paul", "Mark", "Stephen", "Andrew", "Peter", "Christopher", "Anthony",
    "Kevin", "Gary", "Ian", "Simon", "Graham", "Nigel", "Colin", "Trevor", "Keith", "Gordon",
    "Amelia", "Olivia", "Isla", "Emily", "Poppy", "Ava", "Isabella", "Jessica", "Lily", "Megan",
    "Grace", "Sophia", "Mia", "Evie", "Ruby", "Ella", "Scarlett", "Naomi", "Chloe", "Sienna",
    "Freya", "Phoebe", "Charlotte", "Daisy", "Alice", "Florence", "Tessa", "Sofia", "Millie",
    "Lucy", "Matilda", "Elsie", "Rosie", "Imogen", "Harriet", "Hannah", "Layla", "Zara",
    "Sarah", "Emma", "Rachel", "Laura", "Rebecca", "Claire", "Nicola", "Helen", "Karen", "Susan",
    "Margaret", "Patricia", "Elizabeth", "Janet", "Deborah", "Julie", "Joanne", "Amanda", "Bridget",
    "Aisha", "Priya", "Fatima", "Niamh", "Siobhan", "Catriona", "Rhiannon", "Yasmin", "Dafydd",
    "Rhys", "Aled", "Eilidh", "Hamish", "Fraser", "Declan", "Ciaran", "Ravi", "Arjun", "Yusuf",
)

# Short forms people give informally (checkout forms, phone calls); formal records use the full name.
NICKNAMES: Final[dict[str, str]] = {
    "William": "Will", "Robert": "Bob", "Thomas": "Tom", "James": "Jim", "Michael": "Mike",
    "Christopher": "Chris", "Alexander": "Alex", "Daniel": "Dan", "Matthew": "Matt",
    "Samuel": "Sam", "Benjamin": "Ben", "Joseph": "Joe", "Edward": "Ed", "Richard": "Rich",
    "Stephen": "Steve", "Andrew": "Andy", "Peter": "Pete", "Anthony": "Tony", "David": "Dave",
    "Elizabeth": "Liz", "Margaret": "Maggie", "Patricia": "Pat", "Rebecca": "Becky",
    "Jessica": "Jess", "Charlotte": "Lottie", "Isabella": "Bella", "Harriet": "Hattie",
    "Joshua": "Josh", "Nicola": "Nicky", "Deborah": "Debbie", "Susan": "Sue", "Catriona": "Cat",
}

# Common UK surnames, most frequent first (sampled with Zipf-like weights).
LAST_NAMES: Final[tuple[str, ...]] = (
    "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas",
    "Johnson", "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards", "Hughes",
    "Green", "Hall", "Lewis", "Harris", "Clarke", "Patel", "Jackson", "Wood", "Turner", "Martin",
    "Cooper", "Hill", "Ward", "Morris", "Moore", "Clark", "Lee", "King", "Baker", "Harrison",
    "Morgan", "Allen", "James", "Scott", "Phillips", "Watson", "Davis", "Parker", "Price",
    "Bennett", "Young", "Griffiths", "Mitchell", "Kelly", "Cook", "Carter", "Richardson", "Bailey",
    "Collins", "Bell", "Shaw", "Murphy", "Miller", "Cox", "Richards", "Khan", "Marshall",
    "Anderson", "Simpson", "Ellis", "Adams", "Singh", "Begum", "Wilkinson", "Foster", "Chapman",
    "Powell", "Webb", "Rogers", "Gray", "Mason", "Ali", "Hunt", "Hussain", "Campbell", "Matthews",
    "Owen", "Palmer", "Holmes", "Mills", "Barnes", "Knight", "Lloyd", "Butler", "Russell",
    "Barker", "Fisher", "Stevens", "Jenkins", "Murray", "Dixon", "Harvey", "Graham", "Pearson",
    "Ahmed", "Fletcher", "Walsh", "Kaur", "Gibson", "Howard", "Andrews", "Stewart", "Elliott",
    "Reynolds", "Saunders", "Payne", "Fox", "Ford", "Pearce", "Day", "Brooks", "West", "Lawrence",
    "Cole", "Atkinson", "Bradley", "Spencer", "Gill", "Dawson", "Ball", "Burton", "O'Brien",
    "Watts", "Rose", "Booth", "Perry", "Ryan", "Grant", "Wells", "Armstrong", "Francis", "Rees",
    "Hayes", "Hart", "Hudson", "Newman", "Barrett", "Webster", "Hunter", "Gregory", "Carr",
    "Lowe", "Page", "Marsh", "Riley", "Dunn", "Woods", "Parsons", "Berry", "Stone", "Reid",
    "Holland", "Hawkins", "Harding", "Porter", "Robertson", "Newton", "Oliver", "Reed", "Kennedy",
    "Williamson", "Bird", "Gardner", "Shah", "Dean", "Lane", "Cooke", "Bates", "Henderson",
    "Parry", "Burgess", "Bishop", "Walton", "Burns", "Nicholson", "Shepherd", "Ross", "Cross",
    "Long", "Freeman", "Warren", "Nicholls", "Hamilton", "Byrne", "Sutton", "McDonald", "Yates",
    "Hodgson", "Robson", "Curtis", "Hopkins", "O'Neill", "Chambers", "Jennings", "Nguyen", "Kowalski",
)

# (domain, share of addresses, plausible mistypings of that domain)
EMAIL_DOMAINS: Final[tuple[tuple[str, float, tuple[str, ...]], ...]] = (
    ("gmail.com", 0.36, ("gmial.com", "gmail.con", "gmai.com", "gamil.com")),
    ("hotmail.co.uk", 0.15, ("hotmial.co.uk", "hotmail.co", "hotmal.co.uk")),
    ("outlook.com", 0.10, ("outlok.com", "outlook.con")),
    ("yahoo.co.uk", 0.09, ("yaho.co.uk", "yahoo.co.k", "yahooo.co.uk")),
    ("icloud.com", 0.08, ("iclod.com", "icloud.con")),
    ("btinternet.com", 0.06, ("btinternt.com", "btinternet.co")),
    ("live.co.uk", 0.05, ("live.co.k", "lvie.co.uk")),
    ("sky.com", 0.04, ("sky.con", "skyy.com")),
    ("virginmedia.com", 0.04, ("virginmedia.con", "virginmeda.com")),
    ("aol.com", 0.03, ("aol.con", "ao.com")),
)


class Region(NamedTuple):
    """A UK region, the share of people living there, its postcode areas and landline codes."""

    name: str
    share: float
    postcode_areas: tuple[str, ...]
    landline_codes: tuple[str, ...]  # national significant number prefix (no leading 0)


# Landline codes are written without the trunk 0; London numbers are 20 + 8 digits and all other
# codes here are 4 digits + 6 digits, so every number has 10 significant digits.
REGIONS: Final[tuple[Region, ...]] = (
    Region("London", 0.14, ("E", "EC", "N", "NW", "SE", "SW", "W", "WC"), ("20",)),
    Region("South East", 0.14, ("BN", "GU", "RH", "CT", "ME", "TN", "OX", "RG", "MK", "SL"),
           ("1273", "1483", "1293", "1227", "1634", "1892", "1865", "1189")),
    Region("South West", 0.08, ("BS", "BA", "EX", "PL", "TQ", "BH", "GL", "SN"),
           ("1179", "1225", "1392", "1752", "1803", "1202", "1452", "1793")),
    Region("East of England", 0.09, ("CB", "CO", "IP", "NR", "CM", "SS", "LU", "AL"),
           ("1223", "1206", "1473", "1603", "1245", "1702", "1582", "1727")),
    Region("West Midlands", 0.09, ("B", "CV", "WV", "WS", "DY", "ST", "WR"),
           ("1214", "2476", "1902", "1922", "1384", "1782", "1905")),
    Region("East Midlands", 0.07, ("NG", "LE", "DE", "NN", "LN"),
           ("1159", "1162", "1332", "1604", "1522")),
    Region("Yorkshire and the Humber", 0.08, ("LS", "S", "BD", "HD", "HU", "YO", "WF", "HG"),
           ("1132", "1142", "1274", "1484", "1482", "1904", "1924", "1423")),
    Region("North West", 0.11, ("M", "L", "WA", "PR", "BL", "OL", "SK", "CH", "CA"),
           ("1612", "1512", "1925", "1772", "1204", "1616", "1614", "1244", "1228")),
    Region("North East", 0.04, ("NE", "SR", "DH", "TS", "DL"), ("1912", "1915", "1913", "1642", "1325")),
    Region("Wales", 0.05, ("CF", "SA", "NP", "LL", "SY"), ("2920", "1792", "1633", "1248", "1743")),
    Region("Scotland", 0.08, ("G", "EH", "AB", "DD", "KY", "FK", "PA", "IV"),
           ("1413", "1315", "1224", "1382", "1592", "1324", "1475", "1463")),
    Region("Northern Ireland", 0.03, ("BT",), ("2890", "2891", "2893")),
)

#: Letters used in the inward part of UK postcodes (C, I, K, M, O, V are never used there).
POSTCODE_UNIT_LETTERS: Final = "ABDEFGHJLNPQRSTUWXYZ"

SERVICE_REASONS: Final[tuple[str, ...]] = (
    "delivery delay",
    "refund query",
    "faulty item",
    "wrong item received",
    "account access",
    "loyalty points",
    "store complaint",
    "order change",
)

#: Names that are not a channel, device or platform of this business; used for malformed rows.
UNKNOWN_VALUES: Final[tuple[str, ...]] = ("tablet", "kiosk", "fax", "smart-tv")

#: Values that no timestamp parser should accept; used for malformed rows.
BAD_TIMESTAMPS: Final[tuple[str, ...]] = ("31/02/2024 25:61", "not a date", "2024-13-45 99:99:99", "??")
