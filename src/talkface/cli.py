"""The `talkface` command: argument parsing only; each subcommand calls an importable function."""
from __future__ import annotations

import argparse
import os
import sys

from talkface import __version__
from talkface.errors import TalkfaceError

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")  # as talkface.accel.BACKENDS, without importing torch here


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user mistake
        self.exit(2, f"talkface: error: {message}\n")


def cmd_train(args: argparse.Namespace) -> None:
    from talkface.config import override, preset
    from talkface.data import load_dataset
    from talkface.pipeline import pick_device
    from talkface.train import Trainer

    try:
        cfg = override(preset(args.config), args.set)
    except ValueError as e:
        raise TalkfaceError(str(e)) from None
    device = pick_device(args.device)
    dataset = load_dataset(args.data, cfg)
    trainer = Trainer(cfg, dataset, args.out, device=str(device))
    ckpt = os.path.join(args.out, "checkpoint.pt")
    if args.resume and os.path.exists(ckpt):
        trainer.resume(ckpt)
    elif os.path.exists(ckpt) and not args.overwrite:
        raise TalkfaceError("already holds a run (pass --resume to continue it, or --overwrite)", args.out)
    trainer.fit(progress=not args.quiet)
    print(f"weights: {os.path.join(args.out, 'generator.safetensors')}")


def cmd_generate(args: argparse.Namespace) -> None:
    from talkface.pipeline import Animator

    path = Animator(args.checkpoint, device=args.device, backend=args.backend).generate(
        args.image,
        args.audio,
        args.out,
        face_index=args.face_index,
        crop=True if args.crop else None,
        overwrite=args.overwrite,
        seed=args.seed,
        progress=not args.quiet,
    )
    print(path)


def cmd_dub(args: argparse.Namespace) -> None:
    from talkface.pipeline import Animator

    path = Animator(args.checkpoint, device=args.device).dub(
        args.video,
        args.audio,
        args.out,
        face_index=args.face_index,
        fit=args.fit,
        reference=args.reference,
        overwrite=args.overwrite,
        seed=args.seed,
        progress=not args.quiet,
    )
    print(path)


def cmd_serve(args: argparse.Namespace) -> None:
    from talkface.serve import Limits, serve

    limits = Limits(max_upload_mb=args.max_upload_mb, max_audio_seconds=args.max_audio_seconds, max_streams=args.max_streams, max_jobs=args.max_jobs)
    serve(args.checkpoint, host=args.host, port=args.port, token=args.token, backend=args.backend, limits=limits)


def build_parser() -> Parser:
    p = Parser(prog="talkface", description="Make a face talk: a still face and speech in, a lip-synced video out.")
    p.add_argument("--version", action="version", version=f"talkface {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser("train", help="train the GAN")
    t.add_argument("--config", default="tiny", help="preset: tiny or paper")
    t.add_argument("--data", default="synthetic", help="'synthetic', or a folder of preprocessed clips")
    t.add_argument("--out", required=True, help="run folder: config, metrics.jsonl, checkpoints, weights")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. train.steps=200")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a run")
    t.add_argument("--device", default="auto")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("generate", help="animate the face in a photo with speech and write an mp4")
    g.add_argument("--checkpoint", required=True, help="weights (.safetensors) or a training checkpoint (.pt)")
    g.add_argument("--image", required=True, help="a photo with a face (any size; the video keeps it)")
    g.add_argument("--audio", required=True, help="the speech: wav, mp3, m4a, flac, ogg or a video's audio")
    g.add_argument("--out", required=True, help="the mp4 to write")
    g.add_argument("--face-index", type=int, default=None, metavar="N", help="which face when there are several: 0 = the largest")
    g.add_argument("--crop", action="store_true", help="the image is already an aligned face crop: animate it as it is")
    g.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    g.add_argument("--seed", type=int, default=0, help="seed of the noise generator")
    g.add_argument("--device", default="auto")
    g.add_argument("--backend", default="auto", choices=BACKENDS, help="what runs the generator: auto = onnx on CPU when installed, else torch")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    d = sub.add_parser("dub", help="re-dub a talking video: its mouth follows new speech")
    d.add_argument("--checkpoint", required=True, help="weights (.safetensors) or a training checkpoint (.pt)")
    d.add_argument("--video", required=True, help="a video showing the face (its own audio, if any, is replaced)")
    d.add_argument("--audio", required=True, help="the new speech: wav, mp3, m4a, flac, ogg or a video's audio")
    d.add_argument("--out", required=True, help="the mp4 to write")
    d.add_argument("--face-index", type=int, default=None, metavar="N", help="which face when there are several: 0 = the largest (default)")
    d.add_argument(
        "--fit",
        choices=["loop", "cut"],
        default="loop",
        help="audio longer than the video: loop = play the video back and forth to cover it (default), cut = stop at the video's end",
    )
    d.add_argument(
        "--reference",
        choices=["frame", "first"],
        default="frame",
        help="identity still: each frame's own face (default) or the first frame's face throughout",
    )
    d.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    d.add_argument("--seed", type=int, default=0, help="seed of the noise generator")
    d.add_argument("--device", default="auto")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_dub)

    v = sub.add_parser("serve", help="a web page where a photo speaks live with your microphone or an audio file")
    v.add_argument("--checkpoint", required=True, help="weights (.safetensors) or a training checkpoint (.pt)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only; 0.0.0.0 exposes it)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--token", default=None, help="access token; required off loopback (one is made and printed when not given)")
    v.add_argument("--backend", default="auto", choices=BACKENDS, help="what runs the generator: auto = onnx on CPU when installed, else torch")
    v.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload (photo, or photo + audio)")
    v.add_argument("--max-audio-seconds", type=float, default=120.0, help="longest uploaded recording and live stream")
    v.add_argument("--max-streams", type=int, default=4, help="live streams at once")
    v.add_argument("--max-jobs", type=int, default=1, help="mp4 jobs at once")
    v.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except TalkfaceError as e:
        print(f"talkface: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("talkface: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
