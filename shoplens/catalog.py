"""Read a shop's catalog (product photos plus metadata) from the layouts shops actually have."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from shoplens.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

# Canonical names for the columns the app shows; every other column keeps a snake_case name.
RENAMES = {"product_title": "title", "product_display_name": "title", "name": "title", "base_colour": "colour",
           "color": "colour", "base_color": "colour", "master_category": "category"}
ID_COLUMNS = ("product_id", "id", "sku")


class CatalogError(UserError):
    """A catalog that cannot be read; the message says what was expected."""


@dataclass(frozen=True)
class Product:
    """One product: a stable id, its photo and its metadata (all strings)."""

    id: str
    path: Path
    rel_path: str
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return self.metadata.get("title", "")

    @property
    def category(self) -> str:
        return self.metadata.get("category", "")


@dataclass
class Catalog:
    """Products found under `root`, plus rows that named an image that is not there."""

    root: Path
    layout: str
    products: list[Product]
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the indexer should tell the user (id collisions, columns)

    def __len__(self) -> int:
        return len(self.products)


def snake(name: str) -> str:
    """'ProductTitle' -> 'product_title', 'baseColour' -> 'base_colour', 'Sub Category' -> 'sub_category'."""
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def column_notes(header: list[str], source: Path) -> list[str]:
    """Columns that mean the same canonical field ('name' and 'title', 'Color' and 'colour'): the first is
    used (clean_row keeps it), and the note says so instead of dropping the others silently."""
    by_key: dict[str, list[str]] = {}
    for column in header:
        if column:
            key = snake(column)
            by_key.setdefault(RENAMES.get(key, key), []).append(column)
    return [f"{source.name}: columns {', '.join(repr(c) for c in columns)} all mean {key!r}; {columns[0]!r} is used, "
            f"the others are ignored" for key, columns in by_key.items() if len(columns) > 1]


# Manifests saved by Excel on Windows are cp1252 in Western locales, the commonest non-UTF-8 encoding a shop
# sends; when the detector finds it as plausible as its look-alikes (cp1250, cp1257 decode the same bytes
# without error but turn "è" into "č"), it is the one meant.
PREFERRED_LEGACY = "cp1252"
DELIMITERS = ",;\t|"
SNIFF_BYTES = 64 * 1024


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read ({exc.strerror or exc})") from None


def decode_csv(path: Path, data: bytes | None = None) -> tuple[str, str]:
    """The text of a CSV and the encoding it was read with: UTF-8 (with or without a BOM), UTF-16 with a BOM,
    or a legacy encoding that charset-normalizer detects (cp1252 preferred among equally plausible ones).
    A file whose encoding cannot be told is refused with one line; nothing is ever read with replacement
    characters."""
    data = _read_bytes(path) if data is None else data
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise CatalogError(f"{path}: not valid UTF-16 at byte {exc.start} although it starts with a UTF-16 "
                               "byte-order mark; save it as UTF-8") from None
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    head = data[:4096]
    if head.count(b"\x00") > len(head) // 4:
        raise CatalogError(f"{path}: looks like UTF-16 without a byte-order mark; save it as UTF-8 (or UTF-16 with a "
                           "BOM)")
    from charset_normalizer import from_bytes  # imported here: only a non-UTF-8 file needs it

    matches = list(from_bytes(data))
    if not matches:
        raise CatalogError(f"{path}: not UTF-8, and its encoding cannot be told (binary or mixed encodings); save it "
                           "as UTF-8")
    best = matches[0]
    tied = [m for m in matches if m.chaos <= best.chaos]
    names = [m.encoding for m in tied]
    if PREFERRED_LEGACY in names:
        encoding = PREFERRED_LEGACY
    elif len({str(m) for m in tied}) == 1 or best.language != "Unknown":
        encoding = best.encoding
    else:
        raise CatalogError(f"{path}: not UTF-8, and it reads differently as {', '.join(names[:4])}; save it as UTF-8")
    try:
        return data.decode(encoding), encoding
    except UnicodeDecodeError as exc:  # the detector samples; a byte it did not see may not decode
        raise CatalogError(f"{path}: not UTF-8 and not {encoding} either (byte {exc.start}); save it as UTF-8") \
            from None


def csv_encoding(path: Path) -> str:
    """The encoding `decode_csv` reads a CSV with (see there); raises CatalogError when there is none."""
    return decode_csv(path)[1]


def sniff_delimiter(sample: str, want: str | None = None) -> str:
    """The field delimiter of a CSV sample: one of , ; tab |, as csv.Sniffer judges from the sample's rows.
    `want` names a column the header must have (a manifest's `path`): when the sniffed delimiter does not
    give it and another one does, that one is used. A one-column file (or no verdict) is comma-separated."""
    lines = sample.splitlines()
    if len(sample) >= SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut off
    sample = "\n".join(lines)
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        delimiter = ","
    header = lines[0] if lines else ""
    if want is not None:
        for candidate in dict.fromkeys(delimiter + DELIMITERS):
            if want in [snake(h) for h in next(csv.reader([header], delimiter=candidate), [])]:
                return candidate
    if delimiter not in header:
        # The sniffer voted for a delimiter the header does not have: fall back to the one the header uses most.
        counts = {d: header.count(d) for d in DELIMITERS}
        delimiter = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
        if counts[delimiter] == 0:
            delimiter = ","
    return delimiter


def clean_row(row: dict[str, str | None]) -> dict[str, str]:
    """Snake-case the keys, apply the canonical renames, strip values, drop empty keys."""
    out: dict[str, str] = {}
    for key, value in row.items():
        if not key:
            continue
        key = snake(key)
        key = RENAMES.get(key, key)
        if key in out and key in RENAMES.values():
            continue  # keep the first column that maps onto a canonical name
        out[key] = (value or "").strip()
    return out


def product_id(meta: dict[str, str], rel_path: str) -> str:
    """The product's id: its id column where the catalog has one, else its path without suffix."""
    for col in ID_COLUMNS:
        if meta.get(col):
            return meta[col]
    return str(Path(rel_path).with_suffix("")).replace("\\", "/")


def _read_csv(path: Path, notes: list[str] | None = None, want: str | None = None) -> list[dict[str, str]]:
    """Rows with cleaned keys, read in the file's own encoding and delimiter (decode_csv, sniff_delimiter);
    `notes` collects columns that clash (see column_notes) and a legacy encoding that was detected."""
    text, encoding = decode_csv(path)
    if notes is not None and encoding not in ("utf-8", "utf-16"):
        notes.append(f"{path.name}: not UTF-8; read as {encoding} (detected). Save it as UTF-8 to be sure of "
                     "accented titles")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(text[:SNIFF_BYTES], want))
        if notes is not None:
            notes.extend(column_notes(list(reader.fieldnames or []), path))
        return [clean_row(row) for row in reader]
    except csv.Error as exc:
        raise CatalogError(f"{path}: not a readable CSV ({exc})") from None


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def read_fashion_images(root: Path) -> Catalog:
    """Kaggle fashion-images: data/fashion.csv + data/<Category>_<Gender>/Images/images_with_product_ids/<id>.jpg."""
    data = root / "data" if (root / "data" / "fashion.csv").exists() else root
    photos = {p.stem: p for p in sorted(data.glob("*/Images/images_with_product_ids/*")) if _is_image(p)}
    products, missing, notes = [], [], []
    for meta in _read_csv(data / "fashion.csv", notes):
        pid = meta.get("product_id", "")
        photo = photos.get(pid)
        if photo is None:
            missing.append(f"product {pid}: no image under {data}")
            continue
        products.append(Product(pid, photo, _rel(photo, root), meta))
    return Catalog(root, "fashion-images", products, missing, notes)


def read_fashion_product_images(root: Path) -> Catalog:
    """Kaggle Fashion Product Images: styles.csv + images/<id>.jpg."""
    products, missing, notes = [], [], []
    for meta in _read_csv(root / "styles.csv", notes):
        pid = meta.get("id", "")
        photo = root / "images" / f"{pid}.jpg"
        if not photo.is_file():
            missing.append(f"product {pid}: no images/{pid}.jpg")
            continue
        products.append(Product(pid, photo, _rel(photo, root), meta))
    return Catalog(root, "fashion-product-images", products, missing, notes)


def read_folders(root: Path) -> Catalog:
    """A folder per category: <root>/<category>/.../<photo>; photos in the root itself have no category.

    The product id is the file name without suffix, so a photo moved to another category folder stays
    the same product. Photos that share that name (shirt.jpg in tops/ and in sale/, or shirt.jpg beside
    shirt.png) cannot all have it: each of them is identified by its path (tops/shirt.jpg), which a move
    changes, and the catalog notes it.
    """
    photos, skipped = [], []
    for photo in sorted(p for p in root.rglob("*") if _is_image(p)):
        rel = _rel(photo, root)
        if utf8_name(rel):
            photos.append(photo)
        else:  # cannot be stored (payloads are UTF-8 JSON): skip it, name it, index the rest
            skipped.append(f"{printable(rel)}: file name is not valid UTF-8; rename it to index it")
    stems = Counter(p.stem for p in photos)
    products = []
    for photo in photos:
        rel = _rel(photo, root)
        parts = Path(rel).parts
        meta = {"category": parts[0] if len(parts) > 1 else "", "title": photo.stem}
        products.append(Product(photo.stem if stems[photo.stem] == 1 else rel, photo, rel, meta))
    shared = sorted(stem for stem, n in stems.items() if n > 1)
    notes = [f"{sum(stems[s] for s in shared)} photos share a file name with another ({', '.join(shared[:5])}"
             f"{' ...' if len(shared) > 5 else ''}): their product ids are their paths, so moving one to another "
             "folder makes it a new product (--prune removes the old one); rename them to keep ids across moves"
             ] if shared else []
    return Catalog(root, "folders", products, skipped, notes=notes)


def _skip_undecodable(catalog: Catalog) -> Catalog:
    """Move products whose path or metadata cannot be written as UTF-8 to `missing`, so one odd file name
    never aborts a run."""
    keep = []
    for product in catalog.products:
        if utf8_name(product.rel_path) and all(utf8_name(f"{k}{v}") for k, v in product.metadata.items()):
            keep.append(product)
        else:
            catalog.missing.append(f"{printable(product.rel_path)}: file name is not valid UTF-8; rename it to "
                                   "index it")
    catalog.products = keep
    return catalog


def utf8_name(name: str) -> bool:
    """Whether a file name read from disk is valid UTF-8 (Python keeps other bytes as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(name: str) -> str:
    """A file name with its undecodable bytes shown as \\xNN, for messages."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_manifest(csv_path: Path) -> Catalog:
    """A CSV manifest: a `path` column (relative to the CSV, or absolute) plus any metadata columns."""
    root = csv_path.parent
    notes: list[str] = []
    rows = _read_csv(csv_path, notes, want="path")
    if rows and "path" not in rows[0]:
        raise CatalogError(f"{csv_path}: a manifest needs a 'path' column; it has {', '.join(rows[0])}")
    products, missing = [], []
    for line, meta in enumerate(rows, start=2):
        raw = meta.pop("path")
        photo = Path(raw) if Path(raw).is_absolute() else root / raw
        if not raw or not photo.is_file():
            missing.append(f"{csv_path.name} line {line}: no image at {raw!r}")
            continue
        try:
            rel = _rel(photo.resolve(), root.resolve())
        except ValueError:
            rel = photo.as_posix()  # an absolute path outside the manifest's folder
        products.append(Product(product_id(meta, rel), photo, rel, meta))
    return Catalog(root, "csv", products, missing, notes)


def _grocery_classes(root: Path) -> dict[str, dict[str, str]]:
    """classes.csv of the GroceryStoreDataset: fine id -> metadata shared by iconic images and photos."""
    classes = {}
    for row in csv.reader(io.StringIO(decode_csv(root / "classes.csv")[0], newline="")):
        if len(row) < 6 or not row[1].strip().isdigit():
            continue  # the header
        fine, fine_id, coarse, coarse_id, iconic, description = (c.strip() for c in row[:6])
        classes[fine_id] = {"title": fine, "fine_id": fine_id, "coarse_id": coarse_id, "category": coarse,
                            "iconic": iconic.lstrip("/"), "description_path": description.lstrip("/")}
    return classes


def read_grocery_iconic(root: Path) -> Catalog:
    """GroceryStoreDataset web-shop images: one iconic photo per product from classes.csv, with its description."""
    products, missing = [], []
    for fine_id, info in _grocery_classes(root).items():
        photo = root / info["iconic"]
        if not photo.is_file():
            missing.append(f"product {fine_id}: no image at {info['iconic']}")
            continue
        text_path = root / info["description_path"]
        text = text_path.read_text(errors="replace").strip() if text_path.is_file() else ""
        meta = {k: info[k] for k in ("title", "fine_id", "coarse_id", "category")} | {"description": text}
        products.append(Product(fine_id, photo, _rel(photo, root), meta))
    return Catalog(root, "grocery-iconic", products, missing)


def read_grocery_photos(root: Path, split: str = "val") -> Catalog:
    """GroceryStoreDataset shopper photos listed in <split>.txt ("path, fine_id, coarse_id" per line)."""
    if root.is_file():
        root, split = root.parent, root.stem
    classes = _grocery_classes(root)
    products, missing = [], []
    for line in (root / f"{split}.txt").read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[0]:
            continue
        photo = root / parts[0]
        if not photo.is_file():
            missing.append(f"{split}.txt: no image at {parts[0]}")
            continue
        info = classes.get(parts[1], {"title": "", "fine_id": parts[1], "category": ""})
        meta = {"title": info["title"], "fine_id": parts[1], "coarse_id": parts[2] if len(parts) > 2 else "",
                "category": info["category"]}
        products.append(Product(str(Path(parts[0]).with_suffix("")), photo, _rel(photo, root), meta))
    return Catalog(root, "grocery-photos", products, missing)


LAYOUTS = {
    "fashion-images": read_fashion_images,
    "fashion-product-images": read_fashion_product_images,
    "folders": read_folders,
    "grocery-iconic": read_grocery_iconic,
    "grocery-photos": read_grocery_photos,
    "csv": None,  # takes a CSV file, see read_catalog
}


def detect_layout(source: Path) -> str:
    """Guess the layout of a catalog folder (or CSV file)."""
    if source.is_file():
        # A GroceryStoreDataset split list (val.txt) beside classes.csv; any other file is a CSV manifest.
        if source.suffix == ".txt" and (source.parent / "classes.csv").exists():
            return "grocery-photos"
        return "csv"
    if (source / "data" / "fashion.csv").exists() or (source / "fashion.csv").exists():
        return "fashion-images"
    if (source / "styles.csv").exists() and (source / "images").is_dir():
        return "fashion-product-images"
    if (source / "classes.csv").exists() and (source / "iconic-images-and-descriptions").is_dir():
        return "grocery-iconic"
    if _manifest_in(source):
        return "csv"
    return "folders"


def _header(path: Path) -> list[str]:
    """The column names of a CSV (any of the delimiters), read only to recognise a manifest: the names that
    matter are ASCII, so a file in a legacy encoding is peeked at byte for byte (latin-1) here, and read
    properly (or refused, naming why) by read_manifest."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError:
        return []
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        sample = head[:len(head) // 2 * 2].decode("utf-16", errors="ignore")
    else:
        sample = head.removeprefix(b"\xef\xbb\xbf").decode("latin-1")
    delimiter = sniff_delimiter(sample, want="path")
    return next(csv.reader(sample.splitlines()[:1], delimiter=delimiter), [])


def _manifest_in(folder: Path) -> Path | None:
    """The first CSV in `folder` with a `path` column, whatever its delimiter (, ; tab |) or encoding."""
    for candidate in sorted(folder.glob("*.csv")):
        if "path" in [snake(h) for h in _header(candidate)]:
            return candidate
    return None


def read_catalog(source: str | Path, layout: str = "auto") -> Catalog:
    """Read the catalog at `source`, detecting its layout unless `layout` names one of LAYOUTS."""
    source = Path(source).expanduser()
    if not source.exists():
        raise CatalogError(f"{source}: no such catalog folder or file")
    if layout == "auto":
        layout = detect_layout(source)
    if layout not in LAYOUTS:
        raise CatalogError(f"unknown layout {layout!r}; known: auto, {', '.join(LAYOUTS)}")
    if layout == "csv":
        manifest = source if source.is_file() else _manifest_in(source)
        if manifest is None:
            raise CatalogError(f"{source}: no CSV with a 'path' column found")
        return _skip_undecodable(read_manifest(manifest))
    if layout == "grocery-photos" and source.is_file():
        return _skip_undecodable(read_grocery_photos(source))
    if not source.is_dir():
        raise CatalogError(f"{source}: layout {layout!r} needs a folder")
    catalog = LAYOUTS[layout](source)
    _skip_undecodable(catalog)
    if not catalog.products and not catalog.missing:
        raise CatalogError(f"{source}: no product photos found (layout {layout})")
    return catalog
