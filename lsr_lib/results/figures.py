"""One figure style for every notebook; files named after the notebook that makes them.

``save_figure(fig, "01_lit_training")`` writes ``figures/01_lit_training.png`` (for reading) and
``.pdf`` (for papers). Smoke-profile figures go to ``figures/smoke/`` (gitignored).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from ..config.profiles import REPO_ROOT

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}


def apply_style() -> None:
    """Apply the suite's matplotlib style."""
    plt.rcParams.update(STYLE)


def save_figure(fig, name: str, profile: str = "default") -> Path:
    """Save ``fig`` as PNG and PDF under ``figures/`` (``figures/<profile>/`` unless default)."""
    out = REPO_ROOT / "figures" if profile == "default" else REPO_ROOT / "figures" / profile
    out.mkdir(parents=True, exist_ok=True)
    # no creation date in the files: rerunning a stage with the same results leaves git clean
    fig.savefig(out / f"{name}.png", metadata={"Software": None})
    fig.savefig(out / f"{name}.pdf", metadata={"CreationDate": None, "Producer": None, "Creator": None})
    return out / f"{name}.png"


def image_grid(paths: list[str], titles: list[str], ncols: int = 6, size: float = 1.8):
    """A grid of images with wrapped titles (for showing what the data and vectors are)."""
    import textwrap

    from PIL import Image

    nrows = (len(paths) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * 1.25 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, p, t in zip(axes.flat, paths, titles):
        img = Image.open(p).convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        bg.alpha_composite(img)
        ax.imshow(bg.convert("RGB"))
        ax.set_title("\n".join(textwrap.wrap(t, 22)[:3]), fontsize=7)
    fig.tight_layout()
    return fig


def images_with_terms(paths: list[str], names: list[str], terms: dict[str, list[list[str]]], size: float = 2.0):
    """One column per image: the image, its name, then each condition's top terms below it."""
    import textwrap

    from PIL import Image

    n = len(paths)
    fig, axes = plt.subplots(
        2, n, figsize=(size * n, size * 2.6), squeeze=False, gridspec_kw={"height_ratios": [1, 1.6]}
    )
    for j, (p, name) in enumerate(zip(paths, names)):
        img = Image.open(p).convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        bg.alpha_composite(img)
        axes[0, j].imshow(bg.convert("RGB"))
        axes[0, j].set_title("\n".join(textwrap.wrap(name, 20)[:2]), fontsize=8)
        lines = []
        for cond, per_item in terms.items():
            lines.append(f"{cond}:")
            lines += ["  " + ", ".join(per_item[j][i : i + 3]) for i in range(0, len(per_item[j]), 3)]
        axes[1, j].text(0, 1, "\n".join(lines), va="top", fontsize=6.5, family="monospace")
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig
