"""The TOP disease vocabulary and CSV layout, shared by every module that reads labels."""

# Column order of the disease flags in TOP's data.csv; the `labels` feature keeps this order.
DISEASES: tuple[str, ...] = ("AMD", "RVO", "Gla", "MH", "DR", "RD", "RP", "AO", "DM")
NORMAL = "normal"
CSV_COLUMNS: tuple[str, ...] = ("filename", "ID", "age", "sex", "LR", *DISEASES)

DISEASE_NAMES: dict[str, str] = {
    "AMD": "age-related macular degeneration",
    "RVO": "retinal vein occlusion",
    "Gla": "glaucoma",
    "MH": "macular hole",
    "DR": "diabetic retinopathy",
    "RD": "retinal detachment",
    "RP": "retinitis pigmentosa",
    "AO": "artery occlusion",
    "DM": "diabetic macular edema",
}
