"""Write tests/fixtures/toyvqa: a toy visual multiple-choice benchmark in medr1's documented local format.

Shapes drawn with PIL (56x56 PNG, a few hundred bytes each), labelled with a pretend modality, so the
vision path (loading, prompts, GRPO, evaluation, per-modality results) runs on CPU in seconds. The
questions are trivially about the drawing; nothing medical is measured with them. Deterministic:
rerunning rewrites identical files.

    python scripts/make_toyvqa.py
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "toyvqa"
SHAPES = ("circle", "square", "triangle", "cross")
COLORS = ("red", "green", "blue")
MODALITIES = ("MRI", "CT", "X-ray")


def draw(shape: str, color: str, offset: int) -> Image.Image:
    img = Image.new("RGB", (56, 56), "black" if offset % 2 else "white")
    d = ImageDraw.Draw(img)
    a, b = 10 + offset, 44 - offset
    if shape == "circle":
        d.ellipse((a, a, b, b), fill=color)
    elif shape == "square":
        d.rectangle((a, a, b, b), fill=color)
    elif shape == "triangle":
        d.polygon([(28, a), (a, b), (b, b)], fill=color)
    else:
        d.rectangle((24, a, 32, b), fill=color)
        d.rectangle((a, 24, b, 32), fill=color)
    return img


def rows(split: str, n: int, start: int) -> list[dict]:
    out = []
    for i in range(start, start + n):
        shape, color, modality = SHAPES[i % 4], COLORS[i % 3], MODALITIES[i % 3]
        name = f"images/{split}-{i:02d}-{color}-{shape}.png"
        draw(shape, color, i % 5).save(ROOT / name, optimize=True)
        # Options rotate so that the gold sits at each letter equally often (no letter earns reward).
        shift = (SHAPES.index(shape) - (i + i // 4)) % 4
        options = [SHAPES[(k + shift) % 4] for k in range(4)]
        out.append({"id": f"{split}-{i}", "question": "Which shape is drawn in this image?",
                    "options": dict(zip("ABCD", options, strict=True)), "answer_idx": "ABCD"[options.index(shape)],
                    "images": [f"../{name}"], "modality": modality})
    return out


def main() -> None:
    (ROOT / "images").mkdir(parents=True, exist_ok=True)
    for bench, split, n, start in (("vqa_train", "train", 12, 0), ("vqa_test", "test", 6, 100)):
        (ROOT / bench).mkdir(exist_ok=True)
        (ROOT / bench / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(split, n, start)))


if __name__ == "__main__":
    main()
