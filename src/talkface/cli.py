"""The `talkface` command: argument parsing only; each subcommand calls an importable function."""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import signal
import sys

from talkface import __version__
from talkface.bundled import BUNDLED_MODEL, checkpoint_path
from talkface.config import MAX_HEAD_MOTION, MAX_MOUTH_SCALE
from talkface.errors import TalkfaceError
from talkface.stopping import stop_on_signals

BACKENDS = ("auto", "torch", "openvino", "openvino-int8", "onnx", "onnx-int8")  # as talkface.accel.BACKENDS, without importing torch here


BACKEND_HELP = "what runs the networks (auto: the mouth refiner in onnx on the CPU, else torch; openvino and onnx run the mouth refiner or the seed's generator on the CPU; -int8: the seed's generator only)"
CHECKPOINT_HELP = "weights (.safetensors) or a training checkpoint (.pt), or a bundled model: motion (the default) or paper (the seed's direct generator)"


class Help(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        said = any(words in text for words in ("(default", "default:", "default)"))
        if said or action.default is None or action.default is False or action.default == [] or action.default == argparse.SUPPRESS \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", Help)
        kwargs.setdefault("allow_abbrev", False)  # `--face x.jpg` is not `--face-index x.jpg`: an unknown flag is named as such
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2, like every other user mistake
        self.exit(2, f"talkface: error: {message}\n")


def whole(low: int, high: int | None = None, bounds: str | None = None):
    """An argparse type: an integer in [low, high], or a one-line error saying which are allowed."""

    def parse(text: str) -> int:
        allowed = bounds or (f"{low} or more" if high is None else f"from {low} to {high}")
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number ({allowed}), not {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}, not {text}")
        return value

    return parse


def number(accept, allowed: str):
    """An argparse type: a float for which `accept(value)` holds, or a one-line error saying which are allowed."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {allowed}, not {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {allowed}, not {text}")
        return value

    return parse


positive = number(lambda v: 0 < v < float("inf"), "above 0")
fraction = number(lambda v: 0 <= v < 1, "from 0 to below 1")
MOUTH_SCALE = number(lambda v: 0 < v <= MAX_MOUTH_SCALE, f"above 0 and at most {MAX_MOUTH_SCALE:g}")
MOUTH_SCALE_HELP = ("how far the lips and chin move (motion model): 1 = as the model predicts (default), "
                    f"e.g. 1.3 for an expressive speaker, 0.7 for a subtle one; at most {MAX_MOUTH_SCALE:g}")
HEAD_MOTION = number(lambda v: 0 <= v <= MAX_HEAD_MOTION, f"from 0 to {MAX_HEAD_MOTION:g}")


def expression_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the face around the mouth (blinks, brows, head motion), for commands that animate a photo."""
    p.add_argument("--still", action="store_true", help="move only the mouth and chin: no blinks, brows or head motion")
    p.add_argument("--head-motion", type=HEAD_MOTION, default=1.0, metavar="S",
                   help="how much the head turns, nods and tilts (motion model): 1 = default, about 3.5 / 2.2 / 1.6 degrees of "
                        f"standard deviation in yaw / pitch / roll; 0 = a still head (the eyes still blink); at most {MAX_HEAD_MOTION:g}")
    p.add_argument("--no-blink", action="store_true", help="the eyes do not blink (motion model)")


DEVICE_HELP = "where torch runs: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N"
PAPER_ONLY = {
    "--crop": "the motion model finds the face in any picture, crops included",
    "--reference": "the motion model moves each frame's own mouth",
}


def refuse_paper_only(given: list[str], motion: bool) -> None:
    """Options of the seed's generator only, refused in one line when the model is the motion model."""
    if motion and given:
        raise TalkfaceError(f"argument {given[0]}: only for the seed's generator (--checkpoint paper); {PAPER_ONLY[given[0]]}")


def is_bundled_motion(checkpoint: str | None) -> bool:
    """The bundled default (no --checkpoint, or 'motion'): known to be the motion model without loading it."""
    from talkface.bundled import BUNDLED_MODEL, asset

    return checkpoint_path(checkpoint) == asset(BUNDLED_MODEL)


INDEX = whole(0)
COUNT = whole(1)
SEED = whole(-(2**63), 2**64 - 1, "from -2**63 to 2**64 - 1")  # what torch's generators take


def cmd_train(args: argparse.Namespace) -> None:
    load_heavy("talkface.training.gan")
    from talkface.config import override, preset
    from talkface.data import training_data
    from talkface.training.gan import gan_task

    try:
        cfg = override(preset(args.config), args.set + ([f"data.workers={args.workers}"] if args.workers is not None else []))
    except ValueError as e:
        raise TalkfaceError(str(e)) from None
    refuse_finished_run(args)
    run_task(lambda data: gan_task(cfg), lambda: training_data(args.data, cfg, args.out), args)
    if os.environ.get("RANK", "0") == "0":
        print(f"weights: {os.path.join(args.out, 'generator.safetensors')}")


def cmd_preprocess(args: argparse.Namespace) -> None:
    from talkface.data.cut import read_speakers, summary_line

    speakers = read_speakers(args.speakers) if args.speakers else None  # a mistake in it is told before the slow start
    load_heavy("talkface.data.preprocess", "mediapipe")
    from talkface.data.preprocess import PreprocessOptions, preprocess

    opts = PreprocessOptions(size=(args.height, args.width), clip_seconds=args.clip_seconds, val_fraction=args.val_fraction, videos_per_group=args.videos_per_shard)
    report = preprocess(args.inputs, args.out, opts, workers=args.workers, shard_index=args.shard_index, num_shards=args.num_shards,
                        progress=not args.quiet, speakers=speakers)
    print(summary_line(report, args.out))


def load_heavy(*modules: str) -> None:
    """Import the heavy libraries a command needs (torch, mediapipe, ...) with the cyclic garbage
    collector paused, then freeze what they made (gc.freeze): hundreds of thousands of objects that
    live as long as the process, which no later collection, nor the one at exit, walks again.
    This saves about a second of every command that loads torch and mediapipe."""
    todo = [name for name in modules if name not in sys.modules]
    if not todo:  # already loaded (main called again in one process): nothing new to freeze
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in todo:
            importlib.import_module(name)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def check_paths(checkpoint: str | None, out: str, overwrite: bool, inputs: list[tuple[str, str]]) -> None:
    """The checks of the files that cost nothing, in the order the work would meet them, so that a
    mistyped path is reported before the seconds it takes to import torch and mediapipe."""
    from talkface.media.audio import check_readable
    from talkface.media.video import prepare_output

    if checkpoint is not None and not os.path.isfile(checkpoint_path(checkpoint)):
        raise TalkfaceError("no such checkpoint file", checkpoint)
    prepare_output(out, overwrite, inputs=[path for path, _ in inputs], overwrite_option="--overwrite")
    for path, what in inputs:
        check_readable(path, what)


def cmd_generate(args: argparse.Namespace) -> None:
    from talkface.bundled import EXAMPLE_FACE, EXAMPLE_SPEECH, asset

    image, audio = args.image or asset(EXAMPLE_FACE), args.audio or asset(EXAMPLE_SPEECH)
    paper_only = ["--crop"] if args.crop else []
    refuse_paper_only(paper_only, is_bundled_motion(args.checkpoint))
    check_paths(args.checkpoint, args.out, args.overwrite, [(image, "image"), (audio, "audio file")])
    load_heavy("talkface.pipeline", *(() if args.crop else ("mediapipe",)))
    from talkface.pipeline import Animator

    animator = Animator(args.checkpoint, device=args.device, backend=args.backend, mouth_scale=args.mouth_scale, still=args.still,
                        head_motion=args.head_motion, blinks=not args.no_blink)
    refuse_paper_only(paper_only, animator.motion)
    path = animator.generate(
        image,
        audio,
        args.out,
        face_index=args.face_index,
        crop=True if args.crop else None,
        overwrite=args.overwrite,
        seed=args.seed,
        progress=not args.quiet,
    )
    print(path)


def cmd_dub(args: argparse.Namespace) -> None:
    paper_only = ["--reference"] if args.reference else []
    refuse_paper_only(paper_only, is_bundled_motion(args.checkpoint))
    check_paths(args.checkpoint, args.out, args.overwrite, [(args.video, "video"), (args.audio, "audio file")])
    load_heavy("talkface.pipeline", "mediapipe")
    from talkface.pipeline import Animator

    animator = Animator(args.checkpoint, device=args.device, backend=args.backend, mouth_scale=args.mouth_scale)
    refuse_paper_only(paper_only, animator.motion)
    path = animator.dub(
        args.video,
        args.audio,
        args.out,
        face_index=args.face_index,
        fit=args.fit,
        reference=args.reference or "frame",
        overwrite=args.overwrite,
        seed=args.seed,
        progress=not args.quiet,
    )
    print(path)


def cmd_serve(args: argparse.Namespace) -> None:
    load_heavy("talkface.serve.app", "mediapipe")
    from talkface.serve import Limits, serve

    limits = Limits(max_upload_mb=args.max_upload_mb, max_audio_seconds=args.max_audio_seconds, max_streams=args.max_streams, max_jobs=args.max_jobs)
    serve(args.checkpoint, host=args.host, port=args.port, token=args.token, backend=args.backend, limits=limits, batch_streams=args.batch_streams,
          mouth_scale=args.mouth_scale, still=args.still, head_motion=args.head_motion, blinks=not args.no_blink, device=args.device)


def run_config(default, args: argparse.Namespace, weights: str, what: str):
    """A training command's config (`default` with its --set overrides), refused before any work when
    its --out already holds `weights` and --overwrite was not given."""
    from talkface.config import override

    try:
        cfg = override(default, args.set + ([f"data.workers={args.workers}"] if getattr(args, "workers", None) is not None else []))
    except ValueError as e:
        raise TalkfaceError(str(e)) from None
    if os.path.exists(os.path.join(args.out, weights)) and not args.overwrite:
        raise TalkfaceError(f"already holds {what} (pass --overwrite to replace it)", args.out)
    return cfg


def refuse_finished_run(args: argparse.Namespace) -> None:
    """A run folder that holds a run is continued with --resume or replaced with --overwrite, never silently."""
    run = [os.path.join(args.out, name) for name in ("checkpoint.pt", "metrics.jsonl")]
    if os.path.exists(run[0]) and not (args.resume or args.overwrite):
        raise TalkfaceError("already holds a run (pass --resume to continue it, or --overwrite)", args.out)
    if args.overwrite and not args.resume:
        for path in run:
            if os.path.exists(path):
                os.remove(path)


def run_task(make_task, prepare, args: argparse.Namespace, time_limit: float | None = None) -> None:
    """Train the task `make_task(data)` on the shard folder `prepare()` returns, into --out: in one
    process, or in each of torchrun's (the first prepares the data while the others wait)."""
    from talkface.training.loop import Trainer, distributed

    with distributed(args.device) as (rank, world, device):
        import torch.distributed as dist

        wait = dist.barrier if world > 1 else (lambda: None)  # the first process prepares the data, the others wait
        if rank != 0:
            wait()
        data = prepare()
        if rank == 0:
            wait()
        trainer = Trainer(make_task(data), data, args.out, device=device, rank=rank, world=world)
        checkpoint = os.path.join(args.out, "checkpoint.pt")
        if args.resume and os.path.exists(checkpoint):
            trainer.resume(checkpoint)
        trainer.fit(progress=not args.quiet, time_limit=time_limit)


def cmd_train_sync(args: argparse.Namespace) -> None:
    load_heavy("talkface.training.sync", *(() if args.data == "synthetic" else ("mediapipe",)))
    from talkface.config import SyncConfig
    from talkface.data.mouths import mouth_data
    from talkface.training.sync import SyncTask

    cfg = run_config(SyncConfig(), args, "sync_expert.safetensors", "a sync expert")
    refuse_finished_run(args)
    folder = args.cache or os.path.join(args.out, "mouths")
    run_task(lambda data: SyncTask(cfg, data), lambda: mouth_data(args.data, cfg, folder, workers=args.workers or 1, progress=not args.quiet),
             args, time_limit=cfg.time_limit_s or None)
    if os.environ.get("RANK", "0") != "0":
        return
    with open(os.path.join(args.out, "assessment.json")) as f:
        print(json.dumps(json.load(f), indent=2))
    print(f"weights: {os.path.join(args.out, 'sync_expert.safetensors')}")


def cmd_train_refiner(args: argparse.Namespace) -> None:
    load_heavy("talkface.training.refiner", "mediapipe")
    from talkface.config import RefinerConfig
    from talkface.data.refine import window_data
    from talkface.training.refiner import RefinerTask, loss_expert

    cfg = run_config(RefinerConfig(), args, "generator.safetensors", "a model")
    refuse_finished_run(args)
    expert, _ = loss_expert(args.expert)  # refused before the windows are cut if it is evaluate's judge
    motion = checkpoint_path(args.motion)
    folder = args.cache or os.path.join(args.out, "windows")
    run_task(lambda data: RefinerTask(cfg, motion, expert, data), lambda: window_data(args.data, cfg, folder, workers=args.workers or 2, progress=not args.quiet), args)
    if os.environ.get("RANK", "0") != "0":
        return
    with open(os.path.join(args.out, "report.json")) as f:
        print(json.dumps(json.load(f), indent=2))
    print(f"weights: {os.path.join(args.out, 'generator.safetensors')}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    load_heavy("talkface.evaluate", "mediapipe")
    from talkface.evaluate import evaluate_checkpoint, evaluate_video, results_paths, write_results

    results_paths(args.out, overwrite=args.overwrite, overwrite_option="--overwrite")  # before the work, not after it
    if args.video and (args.checkpoint or args.data):
        raise TalkfaceError("give either --data FOLDER (and --checkpoint W), or --video with --audio, not both")
    if args.data or args.checkpoint:
        if not args.data:
            raise TalkfaceError("--checkpoint needs --data (a folder of talking videos)")
        if args.limit is not None and args.limit < 1:
            raise TalkfaceError("--limit must be at least 1")
        meta, clips = evaluate_checkpoint(args.checkpoint, args.data, args.limit, device=args.device, seed=args.seed, progress=not args.quiet)
    elif args.video:
        if not args.audio:
            raise TalkfaceError("--video needs --audio (the speech it should follow)")
        meta, clips = evaluate_video(args.video, args.audio)
    else:
        raise TalkfaceError("give --data FOLDER (and --checkpoint W), or --video V --audio A")
    json_path, html_path = write_results(args.out, meta, clips, overwrite=args.overwrite, overwrite_option="--overwrite")
    print(json_path)
    print(html_path)


def build_parser() -> Parser:
    p = Parser(prog="talkface", description="Make a face talk: a still face and speech in, a lip-synced video out.")
    p.add_argument("--version", action="version", version=f"talkface {__version__} (bundled model: {BUNDLED_MODEL})")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser("train", help="train a model: the motion model (--config motion) or the seed's GAN (--config paper)")
    t.add_argument("--config", default="tiny", help="preset: motion (the default model's kind), paper (the seed's GAN), or their small test versions motion-tiny and tiny")
    t.add_argument("--data", default="synthetic", help="'synthetic', or a folder of preprocessed clips")
    t.add_argument("--out", required=True, help="run folder: config, metrics.jsonl, checkpoints, weights")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. train.steps=200")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a run")
    t.add_argument("--workers", type=INDEX, default=None, help="processes decoding training samples (default: data.workers of the config; 0: the training process)")
    t.add_argument("--device", default="auto", help=DEVICE_HELP + "; under torchrun each process takes its LOCAL_RANK's GPU")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    pp = sub.add_parser("preprocess", help="talking videos -> aligned face-crop clips in tar shards")
    pp.add_argument("inputs", nargs="+", help="folders (searched recursively; VoxCeleb2, LRS2/LRS3, HDTF and GRID layouts), list files, or videos")
    pp.add_argument("--out", required=True, help="output folder: train/ and val/ shards, report.json")
    pp.add_argument("--workers", type=COUNT, default=1, help="parallel processes on this machine (preprocessing runs on the CPU)")
    pp.add_argument("--speakers", metavar="FILE", help="speaker of each video, where its path does not tell: lines 'video<TAB or comma>speaker'")
    pp.add_argument("--shard-index", type=INDEX, default=0, help="this machine's part of the work (0-based) ...")
    pp.add_argument("--num-shards", type=COUNT, default=1, help="... out of this many")
    pp.add_argument("--clip-seconds", type=positive, default=3.0, help="length of the clips each video is cut into, in seconds")
    pp.add_argument("--val-fraction", type=fraction, default=0.05, help="share of speakers (of clips, for one speaker) held out")
    pp.add_argument("--videos-per-shard", type=COUNT, default=50, help="videos whose clips go into one tar shard")
    pp.add_argument("--height", type=COUNT, default=128, help="height of the aligned face crops, in pixels (the paper preset's)")
    pp.add_argument("--width", type=COUNT, default=96, help="width of the aligned face crops, in pixels")
    pp.add_argument("--quiet", action="store_true", help="no progress bar")
    pp.set_defaults(func=cmd_preprocess)

    g = sub.add_parser("generate", help="animate the face in a photo with speech and write an mp4")
    g.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    g.add_argument("--image", help="a photo with a face (any size; the video keeps it); default: the bundled example face")
    g.add_argument("--audio", help="the speech: wav, mp3, m4a, flac, ogg or a video's audio; default: the bundled example speech")
    g.add_argument("--out", default="talkface.mp4", help="the mp4 to write (default: talkface.mp4)")
    g.add_argument("--face-index", type=INDEX, default=None, metavar="N", help="which face when the photo shows several: 0 = the largest (default: the only face; several are refused without it)")
    g.add_argument("--crop", action="store_true", help="(--checkpoint paper only; refused with the motion model) the image is already an aligned face crop: animate it as it is, at the model's crop size")
    g.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    g.add_argument("--seed", type=SEED, default=0, help="seed of the noise generator and of blinks and head motion: the same seed makes the same video (default 0)")
    g.add_argument("--mouth-scale", type=MOUTH_SCALE, default=1.0, metavar="S", help=MOUTH_SCALE_HELP)
    expression_flags(g)
    g.add_argument("--device", default="auto", help=DEVICE_HELP)
    g.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    d = sub.add_parser("dub", help="re-dub a talking video: its mouth follows new speech")
    d.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    d.add_argument("--video", required=True, help="a video showing the face (its own audio, if any, is replaced)")
    d.add_argument("--audio", required=True, help="the new speech: wav, mp3, m4a, flac, ogg or a video's audio")
    d.add_argument("--out", required=True, help="the mp4 to write")
    d.add_argument("--face-index", type=INDEX, default=None, metavar="N", help="which face when there are several: 0 = the largest (default)")
    d.add_argument(
        "--fit",
        choices=["loop", "cut"],
        default="loop",
        help="audio longer than the video: loop = play the video back and forth to cover it (default), cut = stop at the video's end",
    )
    d.add_argument(
        "--reference",
        choices=["frame", "first"],
        default=None,
        help="(--checkpoint paper only; refused with the motion model) identity still: each frame's own face (default: frame) "
             "or the first frame's face throughout",
    )
    d.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    d.add_argument("--seed", type=SEED, default=0, help="seed of the noise generator")
    d.add_argument("--mouth-scale", type=MOUTH_SCALE, default=1.0, metavar="S", help=MOUTH_SCALE_HELP)
    d.add_argument("--device", default="auto", help=DEVICE_HELP)
    d.add_argument("--backend", default="auto", choices=BACKENDS, help="what runs the mouth refiner (auto: onnx on the CPU, else torch; openvino and onnx run it on the CPU); the seed's generator dubs with torch only")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_dub)

    v = sub.add_parser("serve", help="a web page where a photo speaks live with your microphone or an audio file")
    v.add_argument("--checkpoint", default=None, help=CHECKPOINT_HELP)
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only; 0.0.0.0 exposes it)")
    v.add_argument("--port", type=whole(0, 65535), default=8000, help="port to listen on (0: any free port)")
    v.add_argument("--token", default=None, help="access token; required off loopback (one is made and printed when not given)")
    v.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    v.add_argument("--mouth-scale", type=MOUTH_SCALE, default=1.0, metavar="S", help=MOUTH_SCALE_HELP)
    expression_flags(v)
    v.add_argument("--max-upload-mb", type=positive, default=20.0, help="largest upload in MB (photo, or photo + audio); larger ones get 413")
    v.add_argument("--max-audio-seconds", type=positive, default=120.0, help="longest uploaded recording and live stream, in seconds; longer ones get 400")
    v.add_argument("--max-streams", type=COUNT, default=6, help="live streams at once; more get 429 (what 2 cores hold at 512 x 512; measure a machine with benchmarks/serve_load.py)")
    v.add_argument("--max-jobs", type=COUNT, default=1, help="mp4 jobs (/api/generate) at once; more get 429")
    v.add_argument("--device", default="auto", help=DEVICE_HELP + "; the graph backends run on the CPU")
    v.add_argument("--batch-streams", action=argparse.BooleanOptionalAction, default=None,
                   help="make all live streams' frames in shared model calls (default: always for the motion model; "
                        "for the seed's generator on a GPU only, and it needs backend torch)")
    v.set_defaults(func=cmd_serve)

    s = sub.add_parser("train-sync", help="train the lip-sync expert used by `evaluate`")
    s.add_argument("--data", default="synthetic", help="'synthetic', or a folder of talking-face videos (e.g. GRID)")
    s.add_argument("--out", required=True, help="run folder: config, metrics.jsonl, sync_expert.safetensors, assessment.json")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a SyncConfig value, e.g. steps=200")
    s.add_argument("--cache", default=None, help="folder of the mouth-crop shards cut from --data videos (default: OUT/mouths); an interrupted cut resumes")
    s.add_argument("--workers", type=COUNT, default=None, help="processes cutting the mouth crops, and decoding them while training (default: 1 and data.workers)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out")
    s.add_argument("--overwrite", action="store_true", help="replace the expert in --out")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_train_sync)

    r = sub.add_parser("train-refiner", help="train the mouth refiner that draws over a motion model's warp")
    r.add_argument("--data", required=True, help="a folder of talking-face videos (e.g. GRID); its training split is used")
    r.add_argument("--motion", default="motion", help="the motion model to refine: 'motion' (bundled) or a checkpoint")
    r.add_argument("--expert", required=True, help="a lip-sync expert for the loss, not evaluate's (talkface train-sync --set seed=1)")
    r.add_argument("--out", required=True, help="run folder: config.json, metrics.jsonl, report.json, generator.safetensors (motion model + refiner)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a RefinerConfig value, e.g. steps=200")
    r.add_argument("--cache", default=None, help="folder of the training-window shards cut from --data videos (default: OUT/windows); an interrupted cut resumes")
    r.add_argument("--workers", type=COUNT, default=None, help="processes cutting training windows (default 2), and decoding them while training (default: data.workers)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out")
    r.add_argument("--overwrite", action="store_true", help="replace the model in --out")
    r.add_argument("--device", default="auto", help=DEVICE_HELP)
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_train_refiner)

    e = sub.add_parser("evaluate", help="score talking-face videos: lip sync, fidelity, identity, stability")
    e.add_argument("--data", help="a folder of talking videos (with their audio): each video's first frame is animated with its own audio "
                   "and the full frames are scored against the real ones, both aligned to one face crop")
    e.add_argument("--checkpoint", help="with --data: " + CHECKPOINT_HELP)
    e.add_argument("--limit", type=int, default=None, help="with --data: score only the first N videos (sorted by name; default: all)")
    e.add_argument("--video", help="score this video (e.g. another tool's output) against --audio")
    e.add_argument("--audio", help="with --video: the speech the video should follow")
    e.add_argument("--out", required=True, help="folder for metrics.json and report.html")
    e.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    e.add_argument("--seed", type=SEED, default=0, help="seed of the generator's noise")
    e.add_argument("--device", default="auto", help=DEVICE_HELP)
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    # numpy's OpenBLAS would keep a thread per core spinning between the small products made every
    # frame, taking the cores the rendering processes need (with it, 2 live streams' p99 latency went
    # from 70 ms to 340 ms). Read when numpy is first imported, which the commands do after this.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    try:
        with stop_on_signals():
            args.func(args)
    except TalkfaceError as e:
        print(f"talkface: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print("talkface: interrupted" if signum == signal.SIGINT else f"talkface: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
