"""The evaluation report: one self-contained HTML file (tables, and plots inlined as base64 PNG)."""
from __future__ import annotations

import base64
import html
import io
import math

import cv2
import numpy as np

COLOURS = {"generated": "#d95f02", "real": "#1b9e77", "video": "#7570b3"}


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(data: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def aperture_plot(clip) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.4))
    t = np.arange(len(clip.envelope)) / 25.0
    for row, ap in clip.apertures.items():
        ax.plot(t[: len(ap)], ap, color=COLOURS.get(row), label=f"aperture ({row})")
    ax.set_xlabel("seconds")
    ax.set_ylabel("lip gap / eye distance")
    env = ax.twinx()
    env.fill_between(t, clip.envelope, color="0.6", alpha=0.35, label="speech RMS")
    env.set_ylabel("speech RMS")
    lines = ax.get_legend_handles_labels()
    extra = env.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=7, loc="upper right")
    return _png(fig)


def expression_plot(clip) -> str:
    """Eye openness and the head's yaw, pitch and roll over time, one colour per row (generated, real, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (eyes, head) = plt.subplots(2, 1, figsize=(7, 3.8), sharex=True)
    for row, o in clip.eyes.items():
        eyes.plot(np.arange(len(o)) / 25.0, o, color=COLOURS.get(row), label=row)
    eyes.set_ylabel("eye openness")
    eyes.legend(fontsize=7, loc="lower right")
    for row, p in clip.poses.items():
        t = np.arange(len(p)) / 25.0
        for k, (name, style) in enumerate((("yaw", "-"), ("pitch", "--"), ("roll", ":"))):
            head.plot(t, p[:, k] - np.nanmedian(p[:, k]) if np.isfinite(p[:, k]).any() else p[:, k], style, color=COLOURS.get(row),
                      label=f"{name} ({row})")
    head.set_ylabel("head, degrees from median")
    head.set_xlabel("seconds")
    head.legend(fontsize=6, loc="upper right", ncol=2)
    return _png(fig)


def offset_plot(clip) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.4))
    for row, c in clip.curves.items():
        ax.plot(c.offsets, c.mean, marker=".", color=COLOURS.get(row), label=f"{row} (offset {c.offset:+d})")
    ax.axvline(0, color="0.5", lw=0.8, ls=":")
    ax.set_xlabel("audio offset (frames; + = audio late)")
    ax.set_ylabel("expert distance")
    ax.legend(fontsize=7)
    return _png(fig)


def strip_png(strips: dict[str, np.ndarray], height: int = 96) -> str:
    rows = []
    for frames in strips.values():
        scaled = [cv2.resize(f, (max(1, round(f.shape[1] * height / f.shape[0])), height), interpolation=cv2.INTER_AREA) for f in frames]
        rows.append(np.concatenate(scaled, 1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR))
    return base64.b64encode(buf.tobytes()).decode("ascii")


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "&infin;"
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def _table(rows: dict[str, dict[str, float]], names: list[str]) -> str:
    heads = "".join(f"<th>{html.escape(r)}</th>" for r in rows)
    body = "".join(f"<tr><td>{html.escape(n)}</td>" + "".join(f"<td>{_fmt(rows[r].get(n))}</td>" for r in rows) + "</tr>" for n in names)
    return f"<table><tr><th>value</th>{heads}</tr>{body}</table>"


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:first-child{text-align:left}section{border-top:1px solid #ddd;margin-top:1.5em}img{max-width:100%}
dt{font-weight:bold}dd{margin:0 0 .6em 1em;font-size:90%}"""


def render_html(doc: dict, clips: list) -> str:
    names = doc["values"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>talkface evaluation</title><style>{STYLE}</style></head><body>"]
    parts.append("<h1>talkface evaluation</h1><p>")
    for key in ("mode", "checkpoint", "data", "videos", "eval_size", "video", "audio", "frames"):
        if key in doc:
            parts.append(f"<b>{key}</b>: {html.escape(str(doc[key]))}<br>")
    parts.append("</p><h2>Mean over clips</h2>")
    parts.append(_table(doc["mean"], names))
    parts.append("<h2>Metrics</h2><dl>")
    for name, text in doc["metrics"].items():
        parts.append(f"<dt>{html.escape(name)}</dt><dd>{html.escape(text)}</dd>")
    parts.append("</dl>")
    for clip in clips:
        parts.append(f"<section><h3>{html.escape(clip.name)}</h3>")
        parts.append(_table(clip.scores, names))
        parts.append(_img(aperture_plot(clip), "mouth aperture and speech envelope"))
        if clip.curves:
            parts.append(_img(offset_plot(clip), "sync offset curve"))
        if clip.eyes or clip.poses:
            parts.append(_img(expression_plot(clip), "eye openness and head pose over time"))
        parts.append(f"<p>Frames ({', '.join(clip.strips)}, top to bottom):</p>")
        parts.append(_img(strip_png(clip.strips), "sample frames"))
        if clip.previews:
            parts.append("<p>The same frames, whole:</p>")
            parts.append(_img(strip_png(clip.previews), "sample full frames"))
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts)
