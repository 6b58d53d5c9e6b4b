"""Write scenes in the PASCAL VOC layout.

``Annotations/<id>.xml`` follows the VOC schema; boxes are 1-based and
inclusive, as the devkit expects (a 0-based, end-exclusive box ``x0..x1``
becomes ``xmin = x0 + 1``, ``xmax = x1``).
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

from ctx_core.store.layout import TRAINVAL, file_sha256, in_val
from ctx_core.synth.scene import SceneObject

SPLITS = ("unlabeled", "trainval", "test")
# carved from trainval by each JPEG's sha256, the rule the store applies to the ingested copies
TRAINVAL_PARTS = ("train", "val")


def annotation_xml(image_id: str, width: int, height: int, objects: list[SceneObject]) -> str:
    """The VOC XML text for one image."""
    parts = [
        "<annotation>",
        "\t<folder>synthetic</folder>",
        f"\t<filename>{escape(image_id)}.jpg</filename>",
        "\t<source>",
        "\t\t<database>ctx-pipeline synthetic VOC</database>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{width}</width>",
        f"\t\t<height>{height}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        parts += [
            "\t<object>",
            f"\t\t<name>{escape(obj.name)}</name>",
            f"\t\t<pose>{obj.pose}</pose>",
            f"\t\t<truncated>{int(obj.truncated)}</truncated>",
            f"\t\t<difficult>{int(obj.difficult)}</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x0 + 1}</xmin>",
            f"\t\t\t<ymin>{y0 + 1}</ymin>",
            f"\t\t\t<xmax>{x1}</xmax>",
            f"\t\t\t<ymax>{y1}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def write_image_sets(
    root: Path,
    class_names: tuple[str, ...],
    split_of: dict[str, str],
    objects_of: dict[str, list[SceneObject]],
) -> None:
    """``ImageSets/Main``: ``<split>.txt``, ``<class>_<split>.txt`` and ``classes.txt``.

    Besides ``split_of``'s splits, ``train`` and ``val`` partition trainval by the
    sha256 of ``JPEGImages/<id>.jpg`` (``store.layout.in_val``), as in VOC2007.
    Per-class files hold ``<id> 1`` when the image has a non-difficult instance,
    ``<id> 0`` when it only has difficult ones, ``<id> -1`` otherwise (the VOC convention).
    """
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    (main / "classes.txt").write_text("".join(f"{c}\n" for c in class_names))
    part_of = {i: "val" if in_val(file_sha256(root / "JPEGImages" / f"{i}.jpg")) else "train"
               for i, s in split_of.items() if s == TRAINVAL}
    for split in SPLITS + TRAINVAL_PARTS:
        ids = sorted(i for i, s in (part_of if split in TRAINVAL_PARTS else split_of).items() if s == split)
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for cls in class_names:
            lines = []
            for i in ids:
                flags = [o.difficult for o in objects_of[i] if o.name == cls]
                flag = -1 if not flags else (1 if not all(flags) else 0)
                lines.append(f"{i} {flag:2d}\n")
            (main / f"{cls}_{split}.txt").write_text("".join(lines))
