"""Photo or video + audio in, mp4 out: the only place that touches files and devices around the networks.

`Animator.generate` animates a still: the face is found, aligned to the model's template, animated
by `FaceStream`, and each generated crop is pasted back into the full-resolution photo.
`Animator.dub` re-dubs a talking video: every frame's face is tracked, aligned and regenerated with
the new speech, then pasted back; head motion, eyes, background and frame rate stay the video's.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from queue import Full, Queue

import cv2
import numpy as np
import torch
from tqdm import tqdm

from talkface.bundled import checkpoint_path
from talkface.checkpoint import load_generator
from talkface.config import MAX_HEAD_MOTION, MAX_MOUTH_SCALE, Config
from talkface.devices import pick_device
from talkface import stopping
from talkface.errors import TalkfaceError
from talkface.media.audio import MAX_PEAK, FeatureStream, check_readable, iter_audio, num_frames
from talkface.media.face import MIN_FACE_SIZE, Face, FaceTracker, align, detect_faces, paste_back, pick_face
from talkface.media.image import load_image
from talkface.media.video import VideoWriter, frames_on_grid, iter_frames, iter_frames_pingpong, prepare_output, video_info
from talkface.models import GeneratorState
from talkface.models.generator import Identity
from talkface.pixels import to_tensor, to_uint8
from talkface.accel import BACKENDS, make_backend, motion_backend_problem
from talkface.render.parallel import Renderer
from talkface.render.rig import FaceRig, lay, render_frames
from talkface.streaming import FaceStream, MotionStream, PhotoStream, PreparedPhoto
from talkface.threads import one_thread

SILENCE_PEAK = 1e-4  # about -80 dBFS
MIN_SECONDS = 0.1  # shorter speech is no speech (and AAC writes nothing for a few milliseconds)
FITS = ("loop", "cut")
REFERENCES = ("frame", "first")
CHUNK = 10  # frames a worker renders at a time (one refiner call)
MAX_PENDING = 32  # frames made and waiting for the encoder: a second's frames are made together

Progress = bool | Callable[[int, int], None]


def scan_audio(path: str | os.PathLike, sample_rate: int) -> int:
    """Decode the whole file once (streamed) to count its samples and reject silence or garbage."""
    count, peak = 0, 0.0
    for chunk in iter_audio(path, sample_rate, chunk=sample_rate * 10):
        if not np.isfinite(chunk).all():
            raise TalkfaceError("contains invalid samples (NaN or infinity)", path)
        count += len(chunk)
        peak = max(peak, float(np.abs(chunk).max(initial=0.0)))
        if peak > MAX_PEAK:
            raise TalkfaceError(f"contains invalid samples (a peak of {peak:.3g}, far beyond full scale 1.0)", path)
    if count < MIN_SECONDS * sample_rate:
        raise TalkfaceError(f"is too short ({1000 * count / sample_rate:.0f} ms of sound; at least {1000 * MIN_SECONDS:.0f} ms needed)", path)
    if peak < SILENCE_PEAK:
        raise TalkfaceError("is silent (no sound above -80 dBFS)", path)
    return count


def resize_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a face crop to the model's (H, W), cropping to its aspect ratio first."""
    h, w = size
    ih, iw = image.shape[:2]
    if ih * w > iw * h:  # too tall
        keep = iw * h // w
        top = (ih - keep) // 2
        image = image[top : top + keep]
    elif ih * w < iw * h:
        keep = ih * w // h
        left = (iw - keep) // 2
        image = image[:, left : left + keep]
    interp = cv2.INTER_AREA if image.shape[0] > h else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(image, (w, h), interpolation=interp))


def even(frame: np.ndarray) -> np.ndarray:
    """The frame without its last row / column where they are odd (H.264 needs even sizes)."""
    h, w = frame.shape[:2]
    return frame[: h - h % 2, : w - w % 2]


class _Reporter:
    """A tqdm bar (progress=True) and/or a callback(done, total) (progress=callable)."""

    def __init__(self, progress: Progress, total: int, desc: str):
        self.callback = progress if callable(progress) else None
        self.total, self.done = total, 0
        self.bar = tqdm(total=total, desc=desc, unit="frame", disable=progress is not True, dynamic_ncols=True)

    def __call__(self, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        try:
            for frame in frames:
                yield frame
                self.done += 1
                self.bar.update(1)
                if self.callback:
                    self.callback(self.done, self.total)
        finally:
            self.bar.close()


class Animator:
    """A loaded generator and what it needs to turn a face and speech into a video.

    >>> Animator("generator.safetensors").generate("photo.jpg", "speech.mp3", "out.mp4")
    >>> Animator("generator.safetensors").dub("talk.mp4", "new_speech.wav", "dubbed.mp4")

    Without `out`, both return an iterator of frames (H, W, 3) uint8 instead of writing a file.
    `mouth_scale` (motion model only) scales how far the lips and chin move: 1 as the model predicts,
    above 1 for a more expressive speaker, below 1 for a subtler one. A photo also blinks, raises its
    brows and moves its head (`talkface.expression`): `still=True` moves only the mouth and chin,
    `head_motion` scales the head's motion (0: a still head), `blinks=False` keeps the eyes open.
    A dubbed video keeps its own head motion and blinks.
    """

    def __init__(self, checkpoint: str | os.PathLike | None = None, device: str | None = None, backend: str = "auto", streams: int = 1,
                 mouth_scale: float = 1.0, still: bool = False, head_motion: float = 1.0, blinks: bool = True):
        if not 0 < mouth_scale <= MAX_MOUTH_SCALE:
            raise TalkfaceError(f"the mouth scale must be above 0 and at most {MAX_MOUTH_SCALE:g}, not {mouth_scale:g}")
        if not 0 <= head_motion <= MAX_HEAD_MOTION:
            raise TalkfaceError(f"the head motion must be from 0 to {MAX_HEAD_MOTION:g}, not {head_motion:g}")
        self.device = pick_device(device)
        self.generator, self.cfg = load_generator(checkpoint_path(checkpoint), self.device)
        self.motion = self.cfg.kind == "motion"  # speech moves the photo's own pixels (else: the seed's frame generator)
        if mouth_scale != 1 and not self.motion:
            raise TalkfaceError("is the seed's generator, which draws the mouth itself: a mouth scale (--mouth-scale) needs the motion model",
                                checkpoint_path(checkpoint))
        if (head_motion != 1 or not blinks) and not self.motion:
            raise TalkfaceError("is the seed's generator, which moves no head and no eyes: --head-motion and --no-blink need the motion model",
                                checkpoint_path(checkpoint))
        self.cfg.motion.gain *= mouth_scale
        expression = self.cfg.motion.expression
        expression.enabled = expression.enabled and not still
        expression.head *= head_motion
        expression.blinks = expression.blinks and blinks
        if backend not in BACKENDS:
            raise TalkfaceError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        problem = motion_backend_problem(self.generator, backend) if self.motion else None
        if problem:  # found now, not when the backend is first built
            raise TalkfaceError(problem)
        self.backend_name, self.streams = backend, streams  # streams: threads that will generate at once
        self._backend = None
        self._backend_lock = threading.Lock()  # threads asking at once must not export twice (torch's exporter is not thread-safe)

    @property
    def backend(self):
        """What runs the generator (see talkface.accel): built on first use (ONNX export takes seconds)."""
        with self._backend_lock:
            if self._backend is None:
                try:
                    self._backend = make_backend(self.generator, self.cfg, self.backend_name, self.streams)
                except ValueError as e:
                    raise TalkfaceError(str(e)) from None
        return self._backend

    @property
    def size(self) -> tuple[int, int]:
        return self.cfg.model.height, self.cfg.model.width

    def stream(self, face: np.ndarray, seed: int = 0) -> FaceStream:
        """A live stream for a face crop (any size; resized to the model's)."""
        return FaceStream(self.backend, self.cfg, resize_crop(face, self.size), seed=seed)

    def prepare(self, image: str | os.PathLike | np.ndarray, face_index: int | None = None) -> PreparedPhoto:
        """A photo's face found and aligned once, ready for any number of `live` streams."""
        name = image if not isinstance(image, np.ndarray) else None
        picture = load_image(image) if name is not None else image
        return PreparedPhoto(picture, self.size, face_index, name)

    def live(self, photo: PreparedPhoto, seed: int = 0) -> PhotoStream:
        """A live stream of full-resolution frames: push audio chunks of any size, get frames as soon as they are ready."""
        if self.motion:
            return PhotoStream(self.generator, self.cfg, photo, seed=seed, refiner=self.backend.refiner)
        return PhotoStream(self.backend, self.cfg, photo, seed=seed)

    def _chunks(self, audio: str | os.PathLike) -> Iterator[np.ndarray]:
        return iter_audio(audio, self.cfg.audio.sample_rate, chunk=self.cfg.audio.sample_rate)

    def frames(self, face: np.ndarray, audio: str | os.PathLike, seed: int = 0) -> Iterator[np.ndarray]:
        """Iterator of generated crops (H, W, 3) uint8 for a face crop and an audio file (the motion
        model moves the crop's own pixels, so any picture of a face will do)."""
        if self.motion:
            photo = PreparedPhoto(face, self.size)
            return self._whole(photo, self._moved(photo, audio, seed))
        return self.stream(face, seed).run(self._chunks(audio))

    def _moved(self, photo: PreparedPhoto, audio: str | os.PathLike, seed: int) -> Iterator[np.ndarray]:
        """The motion model's frames of a photo for an audio file as patches of `photo.box` (the photo is
        the same outside it), rendered a chunk at a time by one worker process per core
        (`render.parallel`): the same as `live(photo).run(...)` there."""
        stream = self.live(photo, seed)
        rig = stream.rig
        if stream.expressions is not None:  # made before the workers are forked, which inherit them
            _ = rig.eyes, rig.head

        def render(_, jobs: list) -> list[np.ndarray]:
            return render_frames([(rig, *job) for job in jobs])

        def chunks() -> Iterator[tuple[None, list]]:
            for samples in itertools.chain(self._chunks(audio), [None]):
                done = stream.crops.push(samples) if samples is not None else stream.crops.flush()
                jobs = [job[1:] for job in stream.jobs(done)]
                for i in range(0, len(jobs), CHUNK):
                    yield None, jobs[i : i + CHUNK]

        x0, y0, x1, y1 = photo.box
        # torch on one thread here (until the last frame): the networks this process runs are small, and split
        # over threads they waited on cores that the rendering processes keep busy
        with Renderer(render, (y1 - y0, x1 - x0), CHUNK) as renderer, one_thread():
            yield from renderer.map(chunks())

    @staticmethod
    def _whole(photo: PreparedPhoto, patches: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """`_moved`'s patches as full-resolution frames, each a new array."""
        return (photo.whole(patch) for patch in patches)

    # -- a photo --------------------------------------------------------------------------------
    def generate(
        self,
        image: str | os.PathLike | np.ndarray,
        audio: str | os.PathLike,
        out: str | os.PathLike | None = None,
        *,
        face_index: int | None = None,
        crop: bool | None = None,
        overwrite: bool = False,
        seed: int = 0,
        progress: Progress = False,
    ) -> str | Iterator[np.ndarray]:
        """Animate the face in a photo with speech: an H.264/AAC mp4 at the photo's resolution.

        The face is found with mediapipe, aligned to the model's template, animated, and pasted back
        (lower face and jaw) into every frame. Several faces need `face_index` (0 = the largest).
        `crop=True` takes the image as an already aligned face crop and writes the model's crops
        as they are (the model's size); `crop=None` does so only when no face is found in an image
        that has exactly the model's size. Returns `out`, or the frames when `out` is None.
        """
        out = prepare_output(out, overwrite, inputs=(image, audio)) if out is not None else None
        name = image if not isinstance(image, np.ndarray) else None
        picture = load_image(image) if name is not None else image
        total = num_frames(scan_audio(audio, self.cfg.audio.sample_rate), self.cfg.audio)
        if self.motion:  # the face's own pixels move, at the photo's resolution
            photo = PreparedPhoto(picture, self.size, face_index, name)
            patches = _Reporter(progress, total, "generate")(self._moved(photo, audio, seed))
            if out is None:
                return self._whole(photo, patches)
            return _write(out, patches, self.cfg.audio.fps, photo.shape, audio, over=(photo.picture, photo.box))
        as_crop = crop is True
        if crop is not True:
            picture = even(picture)
            faces = detect_faces(picture)
            as_crop = crop is None and not faces and picture.shape[:2] == self.size
        if as_crop:
            frames = self.frames(picture, audio, seed)
            size = self.size
        else:
            face = pick_face(faces, face_index, name)
            still, M = align(picture, face, self.size)
            crops = self.frames(still, audio, seed)
            frames = (paste_back(picture, c, M, face) for c in crops)
            size = picture.shape[:2]
        frames = _Reporter(progress, total, "generate")(frames)
        if out is None:
            return frames
        return _write(out, frames, self.cfg.audio.fps, size, audio)

    # -- a video --------------------------------------------------------------------------------
    def dub(
        self,
        video: str | os.PathLike,
        audio: str | os.PathLike,
        out: str | os.PathLike | None = None,
        *,
        face_index: int | None = None,
        fit: str = "loop",
        reference: str = "frame",
        overwrite: bool = False,
        seed: int = 0,
        progress: Progress = False,
    ) -> str | Iterator[np.ndarray]:
        """Re-dub a talking video so that its mouth follows new speech; everything else stays.

        fit="loop": the output lasts as long as the new audio; a shorter video is played back and
        forth (ping-pong) to cover it, a longer one is cut. fit="cut": the output ends with whichever
        of video and audio ends first. reference="frame": each frame's own aligned face is the
        identity still (pose and light always match the frame); "first": the first frame with the
        face is used throughout. Frames where the face is not found pass through unchanged.
        Returns `out`, or the frames when `out` is None.
        """
        if fit not in FITS:
            raise TalkfaceError(f"--fit must be one of {', '.join(FITS)}, not {fit!r}")
        if reference not in REFERENCES:
            raise TalkfaceError(f"--reference must be one of {', '.join(REFERENCES)}, not {reference!r}")
        if not self.motion and self.backend_name not in ("auto", "torch"):
            raise TalkfaceError(f"the seed's frame generator dubs with torch only, not {self.backend_name} (use --backend torch)")
        out = prepare_output(out, overwrite, inputs=(video, audio)) if out is not None else None
        info = video_info(check_readable(video, "video"))
        frames = iter_frames(video)
        first = next(frames, None)
        frames.close()
        if first is None:
            raise TalkfaceError("has no frames", video)
        cfg = dataclasses.replace(self.cfg, audio=dataclasses.replace(self.cfg.audio, fps=info["fps"]))
        total = num_frames(scan_audio(audio, cfg.audio.sample_rate), cfg.audio)
        if fit == "cut":
            total = min(total, frames_on_grid(video, info["fps"]) or total)
        # at the video's average rate, each frame at its own time (a variable frame rate keeps its timing)
        source = iter_frames_pingpong(video, fps=info["fps"]) if fit == "loop" else iter_frames(video, fps=info["fps"])
        shape = even(first).shape[:2]
        dubber = _MotionDubber(self.generator, cfg, face_index, seed, shape, self.backend.refiner) if self.motion else _Dubber(self.generator, cfg, face_index, reference, seed)
        frames = dubber.run(map(even, source), audio, total, video)
        frames = _Reporter(progress, total, "dub")(frames)
        if out is None:
            return frames
        return _write(out, frames, info["fps"], shape, audio)


def _write(out: str, frames: Iterator[np.ndarray], fps: float, size: tuple[int, int], audio: str | os.PathLike,
           over: tuple[np.ndarray, tuple[int, int, int, int]] | None = None) -> str:
    """Frames are made on this thread while another encodes them (OpenCV's warps and PyAV's encoder
    release the GIL), so a long job keeps the cores busy; up to `MAX_PENDING` frames wait in between.
    `over`: a picture and a box (even corners) of it: `frames` are patches of that box, the picture the same around them."""
    with VideoWriter(out, fps, size, audio_path=audio) as writer, ThreadPoolExecutor(1, thread_name_prefix="talkface-encode") as encoder:
        pending: collections.deque = collections.deque()
        try:
            for i, frame in enumerate(frames):
                stopping.check()
                if over is None:
                    pending.append(encoder.submit(writer.write, frame))
                elif i == 0:  # the whole first frame; only the box after it
                    pending.append(encoder.submit(writer.write, lay(over[0].copy(), frame, over[1])))
                else:
                    pending.append(encoder.submit(writer.write, frame, over[1][:2]))
                if len(pending) > MAX_PENDING:
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
        except BaseException:
            for future in pending:  # the first failure ends the job: what waits behind it is dropped
                future.cancel()
            raise
    return out


def ahead(items: Iterator, depth: int = 8) -> Iterator:
    """`items`, computed on a thread of their own up to `depth` ahead of the consumer (decoding and face
    tracking overlap the warp and the encoder this way). Its exceptions reach the consumer in order;
    a consumer that stops early stops the thread, which closes `items` itself."""
    done = object()
    queue: Queue = Queue(depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        """Queue `entry` unless the consumer has stopped (then False)."""
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    break
            else:
                put((done, None))
        except BaseException as e:  # handed to the consumer, raised there
            put((done, e))
        finally:
            if stop.is_set() and hasattr(items, "close"):
                items.close()

    worker = threading.Thread(target=produce, name="talkface-track", daemon=True)
    worker.start()
    try:
        while True:
            item, error = queue.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        worker.join()


class _Tracked:
    """Video frames -> (frame, face or None): the face tracked and smoothed; faces too small to animate
    are None; after the last frame, a TalkfaceError when the face was never usable."""

    def __init__(self, cfg: Config, face_index: int | None, video: str | os.PathLike):
        self.cfg, self.face_index, self.video = cfg, face_index, video

    def __call__(self, frames: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, Face | None]]:
        tracker = FaceTracker(fps=self.cfg.audio.fps, index=self.face_index or 0)
        found = small = 0
        try:
            for frame in frames:
                try:
                    face = tracker(frame)
                except TalkfaceError as e:
                    raise TalkfaceError(e.problem, self.video) from None
                if face is not None and face.size < MIN_FACE_SIZE:
                    small, face = max(small, face.size), None  # too few pixels to animate: pass through
                found += face is not None
                yield frame, face
        finally:
            tracker.close()
        if not found and small:
            raise TalkfaceError(f"the face is too small (at most {small:.0f} px between eyes and mouth; at least {MIN_FACE_SIZE:.0f} needed)", self.video)
        if not found:
            raise TalkfaceError("no face found in any frame", self.video)


class _MotionDubber:
    """Video frames + audio -> frames whose mouths move with the audio: each frame's own mouth is closed
    to its rest shape (`close_mouth`) and moved to the predicted motion, so the video's pose, light and
    background stay in every frame. Frames without the face pass through (the motion still advances)."""

    def __init__(self, model, cfg: Config, face_index: int | None, seed: int, shape: tuple[int, int], refiner=None):
        self.model, self.cfg, self.face_index, self.seed, self.refiner = model, cfg, face_index, seed, refiner
        self.shape = shape  # (H, W) of every frame

    def run(self, frames: Iterator[np.ndarray], audio: str | os.PathLike, total: int, video: str | os.PathLike) -> Iterator[np.ndarray]:
        """The dubbed frames (all of `self.shape`), a chunk at a time by one worker process per core (`render.parallel`)."""
        gain, refiner = self.cfg.motion.gain, self.refiner

        def render(pictures: np.ndarray, items: list) -> list[np.ndarray]:
            jobs, rig = [], None
            for picture, (face, motion, speech) in zip(pictures, items):
                if face is not None:  # each frame's own rig; its neighbour's mouth mesh and colours serve again
                    rig = FaceRig(picture, face, gain, refiner, like=rig)
                    jobs.append((rig, motion, speech, None))
            made = iter(render_frames(jobs)) if jobs else iter(())
            return [next(made) if face is not None else picture for picture, (face, _, _) in zip(pictures, items)]

        with Renderer(render, self.shape, CHUNK) as renderer:  # forked before the tracking thread starts
            chunks = iter_audio(audio, self.cfg.audio.sample_rate, chunk=self.cfg.audio.sample_rate)
            motions = MotionStream(self.model, self.cfg, seed=self.seed).run(chunks)
            tracked = ahead(_Tracked(self.cfg, self.face_index, video)(itertools.islice(frames, total)))
            work = ((frame, (face, motion, speech)) for (frame, face), (motion, speech) in zip(tracked, motions))
            yield from renderer.map((np.stack([f for f, _ in part]), [i for _, i in part]) for part in _batched(work, CHUNK))
            for _ in tracked:  # the tracker's verdict on a video where the face never showed
                pass


def _batched(items: Iterator, n: int) -> Iterator[list]:
    while part := list(itertools.islice(items, n)):
        yield part


class _Dubber:
    """Video frames + audio -> frames with regenerated mouths, streamed in batches of `batch` frames."""

    def __init__(self, generator, cfg: Config, face_index: int | None, reference: str, seed: int, batch: int = 16):
        self.generator, self.cfg, self.reference, self.batch = generator, cfg, reference, batch
        self.face_index = face_index
        self.device = next(generator.parameters()).device
        self.noise = torch.Generator().manual_seed(seed)
        self.state = GeneratorState()
        self.identity: Identity | None = None  # the fixed one, for reference="first"
        self.size = (cfg.model.height, cfg.model.width)

    def run(self, frames: Iterator[np.ndarray], audio: str | os.PathLike, total: int, video: str | os.PathLike) -> Iterator[np.ndarray]:
        tracked = ahead(_Tracked(self.cfg, self.face_index, video)(itertools.islice(frames, total)))
        pending: list[tuple[np.ndarray, Face | None, np.ndarray | None, np.ndarray | None, np.ndarray]] = []
        for (frame, face), window in zip(tracked, self._windows(audio)):
            crop, M = align(frame, face, self.size) if face is not None else (None, None)
            pending.append((frame, face, crop, M, window))
            if len(pending) == self.batch:
                yield from self._flush(pending)
                pending = []
        yield from self._flush(pending)
        for _ in tracked:  # the tracker's verdict on a video where the face never showed
            pass

    def _windows(self, audio: str | os.PathLike) -> Iterator[np.ndarray]:
        features = FeatureStream(self.cfg.audio)
        for chunk in iter_audio(audio, self.cfg.audio.sample_rate, chunk=self.cfg.audio.sample_rate):
            yield from features.push(chunk)
        yield from features.flush()

    @torch.inference_mode()
    def _flush(self, pending: list) -> Iterator[np.ndarray]:
        """Generate the crops of the frames that show the face, paste them back, in order."""
        todo = [i for i, p in enumerate(pending) if p[1] is not None]
        generated: dict[int, np.ndarray] = {}
        if todo:
            mfcc = torch.from_numpy(np.stack([pending[i][4] for i in todo]))[None].to(self.device)
            z = self.generator.noise.sample(1, len(todo), generator=self.noise).to(self.device)
            if self.reference == "first":
                if self.identity is None:
                    self.identity = self.generator.encode_identity(to_tensor(pending[todo[0]][2])[None].to(self.device))
                crops, self.state = self.generator.decode(self.identity, mfcc, z, self.state)
                crops = crops[0]
            else:  # each frame its own still: the codes run through time, then frame i is rendered on still i
                stills = self.generator.encode_identity(to_tensor(np.stack([pending[i][2] for i in todo])).to(self.device))
                audio_codes, noise_codes, self.state = self.generator.codes(mfcc, z, self.state)
                crops = self.generator.render(stills, audio_codes.transpose(0, 1), noise_codes.transpose(0, 1))[:, 0]
            generated = dict(zip(todo, to_uint8(crops)))
        for i, (frame, face, _, M, _) in enumerate(pending):
            yield paste_back(frame, generated[i], M, face) if i in generated else frame
