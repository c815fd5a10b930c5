"""Task maps: 2-D layouts of a distance matrix, drawn as PNG, CSV and a hoverable HTML page."""

from __future__ import annotations

import csv
import html
import io
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import Task2VecError
from ..io import atomic_open
from ..validate import seed as check_seed

LAYOUTS = ("umap", "tsne", "pca")
UMAP_MIN_POINTS = 5


def classical_mds(D: np.ndarray, dims: int = 2) -> np.ndarray:
    """Principal coordinates: PCA of the double-centred squared distance matrix; negative eigenvalues count as 0.

    Kept over sklearn's ClassicalMDS, which gives NaN coordinates where d_sym (not Euclidean) has negative eigenvalues.
    """
    n = len(D)
    J = np.eye(n) - 1.0 / n
    B = -0.5 * J @ (D ** 2) @ J
    vals, vecs = np.linalg.eigh(B)
    order = np.argsort(vals)[::-1][:dims]
    coords = vecs[:, order] * np.sqrt(np.clip(vals[order], 0, None))
    return np.pad(coords, ((0, 0), (0, dims - coords.shape[1])))


def layout(D: np.ndarray, method: str = "umap", seed: int = 0) -> tuple[np.ndarray, str, str]:
    """2-D coordinates for a precomputed distance matrix: (coords, method used, note)."""
    if method not in LAYOUTS:
        raise Task2VecError(f"unknown layout {method!r} (one of {', '.join(LAYOUTS)})")
    seed = check_seed(seed)
    n = len(D)
    D = 0.5 * (D + D.T)
    np.fill_diagonal(D, 0.0)
    note = ""
    if method == "umap" and n < UMAP_MIN_POINTS:
        note = f"UMAP needs at least {UMAP_MIN_POINTS} points, got {n}: used classical MDS (pca) instead"
        method = "pca"
    if method == "tsne" and n < 4:
        note = f"t-SNE needs at least 4 points, got {n}: used classical MDS (pca) instead"
        method = "pca"
    if method == "pca":
        return classical_mds(D), "pca", note
    if method == "umap":
        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reducer = umap.UMAP(n_neighbors=min(15, n - 1), metric="precomputed", random_state=seed,
                                init="random" if n < 10 else "spectral", min_dist=0.3)
            return reducer.fit_transform(D), "umap", note
    from sklearn.manifold import TSNE

    tsne = TSNE(metric="precomputed", init="random", random_state=seed, perplexity=min(30.0, (n - 1) / 3))
    return tsne.fit_transform(D), "tsne", note


def cluster_order(D: np.ndarray):
    """Average-linkage clustering of D: (linkage matrix, leaf order)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    Z = linkage(squareform(0.5 * (D + D.T), checks=False), method="average")
    return Z, leaves_list(Z)


DEFAULT_COLOR = "#1f77b4"  # every point, when the map has no groups


def group_colors(groups: Sequence[str] | None) -> dict[str, str]:
    """Each group's colour (matplotlib's tab10, groups in sorted order), the same in the PNG and the HTML."""
    import matplotlib
    from matplotlib.colors import to_hex

    palette = matplotlib.colormaps["tab10"]
    return {g: to_hex(palette(i % 10)) for i, g in enumerate(sorted(set(groups or ())))}


def draw(D: np.ndarray, coords: np.ndarray, names: Sequence[str], path: str | Path, *,
         groups: Sequence[str] | None = None, title: str = "", method: str = "umap") -> Path:
    """PNG: the 2-D map (points labelled, coloured by group) and the clustered distance heatmap.

    Drawn on a bare Agg figure: matplotlib's backend and pyplot's figures are left as they are.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy.cluster.hierarchy import dendrogram

    Z, order = cluster_order(D)
    n = len(names)
    fig = Figure(figsize=(16, 7.5))
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0.04, 0.08, 0.40, 0.84])
    palette = group_colors(groups)
    colors = [palette[g] for g in groups] if groups is not None else [DEFAULT_COLOR] * n
    ax.scatter(coords[:, 0], coords[:, 1], c=colors, s=60, edgecolor="k", linewidth=0.5)
    for (x, y), name in zip(coords, names):
        ax.annotate(name, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
    group_names = list(palette)
    for g in group_names:
        ax.scatter([], [], color=palette[g], label=g)
    if group_names:
        ax.legend(fontsize=8, loc="best")
    ax.set_title(title or f"task map ({method} of the symmetric Task2Vec distance)")
    ax.set_xticks([])
    ax.set_yticks([])
    axd = fig.add_axes([0.52, 0.08, 0.08, 0.84])
    if Z[:, 2].max() > 0:  # identical tasks merge at height 0: no tree to draw (and no axis to scale)
        dendrogram(Z, orientation="left", ax=axd, no_labels=True, color_threshold=None, link_color_func=lambda k: "k")
        axd.invert_yaxis()
    axd.axis("off")
    axh = fig.add_axes([0.605, 0.08, 0.30, 0.84])
    im = axh.imshow(D[np.ix_(order, order)], cmap="viridis_r", aspect="auto", interpolation="nearest")
    axh.set_yticks(range(n))
    axh.set_yticklabels([names[i] for i in order], fontsize=7)
    axh.yaxis.tick_right()
    axh.set_xticks(range(n))
    axh.set_xticklabels([names[i] for i in order], fontsize=7, rotation=90)
    axh.set_title("distance, clustered")
    fig.colorbar(im, cax=fig.add_axes([0.97, 0.08, 0.01, 0.84]))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    with atomic_open(path) as f:
        f.write(buf.getvalue())
    return Path(path)


def write_coords_csv(coords: np.ndarray, names: Sequence[str], path: str | Path) -> Path:
    with atomic_open(path, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", "x", "y"])
        w.writerows([name, f"{x:.6g}", f"{y:.6g}"] for name, (x, y) in zip(names, coords))
    return Path(path)


def write_html(coords: np.ndarray, names: Sequence[str], info: Sequence[str], path: str | Path,
               title: str = "task map", groups: Sequence[str] | None = None) -> Path:
    """A self-contained page: an SVG map where hovering a point shows its task name and metadata;
    points coloured by ``groups`` as in :func:`draw`, with a legend."""
    lo, hi = coords.min(0), coords.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    xy = 40 + (coords - lo) / span * 720
    palette = group_colors(groups)
    colors = [palette[g] for g in groups] if groups is not None else [DEFAULT_COLOR] * len(names)
    pts = []
    for (x, y), name, text, color in zip(xy, names, info, colors):
        tip = html.escape(f"{name}\n{text}")
        pts.append(f'<g><circle cx="{x:.1f}" cy="{800 - y:.1f}" r="7" fill="{color}" stroke="#000">'
                   f'<title>{tip}</title></circle><text x="{x + 9:.1f}" y="{800 - y - 9:.1f}" '
                   f'font-size="11">{html.escape(name)}</text></g>')
    legend = "".join(f"<span style='margin-right:1em'><span style='color:{c}'>&#9679;</span> {html.escape(g)}</span>"
                     for g, c in palette.items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h3>{html.escape(title)}</h3><p>Hover a point for its task and metadata.</p>"
            + (f"<p class='legend'>{legend}</p>" if legend else "")
            + f"<svg width='820' height='840' style='border:1px solid #ccc'>{''.join(pts)}</svg></body></html>")
    with atomic_open(path, "w") as f:
        f.write(page)
    return Path(path)
