"""Typed configuration: one dataclass per concern, presets, and `key=value` overrides."""
from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class AudioConfig:
    sample_rate: int = 16000
    fps: float = 25.0
    n_mfcc: int = 13
    n_mels: int = 40
    hop_ms: float = 10.0
    fft_ms: float = 25.0
    window_ms: float = 350.0  # audio context seen per video frame
    centre: float = 0.5  # fraction of the window that lies before the frame's centre

    @property
    def hop(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.fft_ms / 1000))

    @property
    def steps(self) -> int:
        """MFCC steps in one window."""
        return int(round(self.window_ms / self.hop_ms))

    @property
    def span_ms(self) -> float:
        """Audio one window covers: `steps` hops plus the FFT frame's overhang."""
        return (self.steps - 1) * self.hop_ms + self.fft_ms

    @property
    def lookahead_ms(self) -> float:
        """How far past the end of a frame's own interval its audio window reaches."""
        return max(0.0, self.span_ms * (1 - self.centre) - 500.0 / self.fps)


@dataclass
class AudioEncoderConfig:
    channels: tuple[int, ...] = (32, 64, 128, 128, 256)  # the 5 conv layers
    fc: int = 256
    dim: int = 256  # output of the 2nd FC layer and of the GRU
    gru_layers: int = 2


@dataclass
class IdentityEncoderConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)  # 5 conv layers, then 1 to `dim`
    dim: int = 50
    first_stride: int = 2  # 1 for small frames so the bottleneck stays (H/16, W/16)


@dataclass
class NoiseConfig:
    dim: int = 10
    std: float = 0.77
    gru_layers: int = 2


@dataclass
class FrameDiscriminatorConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128)  # 4 conv+pool layers
    fc: int = 256


@dataclass
class SequenceDiscriminatorConfig:
    channels: tuple[int, ...] = (8, 16, 32, 64)  # per-frame image encoder
    audio_dim: int = 128
    hidden: int = 256
    pyramid: tuple[int, ...] = (1, 2, 4)  # 1-D spatial pyramid pooling levels over time
    fc: int = 256


@dataclass
class ModelConfig:
    height: int = 128
    width: int = 96
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    identity: IdentityEncoderConfig = field(default_factory=IdentityEncoderConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    frame_disc: FrameDiscriminatorConfig = field(default_factory=FrameDiscriminatorConfig)
    seq_disc: SequenceDiscriminatorConfig = field(default_factory=SequenceDiscriminatorConfig)
    residual: bool = True  # the decoder's output is a change applied to the still
    # The still's mouth is hidden from the generator (y0, y1, x0, x1 as fractions of the crop), so it
    # must draw the mouth from the speech instead of copying the still's (or, when dubbing, the old words').
    mouth_mask: tuple[float, float, float, float] = (0.56, 0.88, 0.2, 0.8)
    latent_per_stage: int = 16  # channels of the latent broadcast into each decoder conv (0: bottleneck only)


@dataclass
class MotionDiscriminatorConfig:
    """The sequence discriminator of the motion model: motion steps + their audio -> GRU -> 1-D SPP -> 2 FC."""

    hidden: int = 128
    audio_dim: int = 64
    pyramid: tuple[int, ...] = (1, 2, 4)
    fc: int = 128


MAX_MOUTH_SCALE = 2.0  # the most a user may scale the predicted motion: beyond it lips part further than any mouth does
MAX_HEAD_MOTION = 2.0  # the most a user may scale the head's motion: beyond it the warp of a turned head folds


@dataclass
class ExpressionNetConfig:
    """The motion model's network for the upper face (talkface.models.expression): the seed's noise
    generator and a GRU over it, the speech and the blink rate asked for give each frame's lid closure
    and brow raise; a sequence discriminator of the same kind as the mouth's judges them. Trained on
    whole clips, with the discriminator's own learning rate `d_lr`.

    Lid closure is learned from the training videos' eye openness: 0 is the clip's median openness,
    1 is `shut` of it (the face mesh's reading of a median closed blink). Losses: the discriminator
    (`adv`), the distributions of closure, its change and the brows across the batch against the real
    ones (`spread`), and the number of blinks in each clip against the real clip's (`count`), which
    teaches the network what the rate it is given means.

    `head`: the network also gives the head's pose per frame (yaw, pitch, roll, and the shift across
    and down), learned from the pose of the training videos' heads (each clip's, from its median; cut
    by `talkface preprocess`, which stores it), judged by the same discriminator and spread losses.
    For videos whose heads move (interviews, VoxCeleb2); GRID s1's head is still, so the bundled model
    leaves it off and shapes its head motion instead (`ExpressionConfig`).
    """

    enabled: bool = True  # weights made before this network load with it off (no blinks, brows or head motion)
    head: bool = False
    audio_dim: int = 32
    hidden: int = 48
    disc_hidden: int = 64
    brow_range: float = 0.05  # the brows' raise and drop are at most this, in face sizes
    shut: float = 0.33
    d_lr: float = 2e-4
    adv: float = 0.1
    spread: float = 10.0
    count: float = 1.0


@dataclass
class ExpressionConfig:
    """Blinks, brows and head motion around the speech's mouth motion (talkface.expression).

    Blinks and brows come from the motion model's learned network (`net`; GRID s1 taught the bundled
    one): its noise generator makes them spontaneous, the speech times them, and `blink_rate` (a
    minute) is asked of it; the brows are smoothed (`brow_hz`).

    Head motion comes from the network too when it learned the head's pose from videos whose heads
    move (`net.head`); `head` scales it. Otherwise (the bundled model: s1's head is still, so it cannot
    be learned from him) the head turns, nods and tilts with the network's noise generator's first
    five channels, shaped by a critically damped low-pass filter (corner `head_hz`) and scaled to
    `yaw`, `pitch`, `roll` degrees of standard deviation and `shift` face sizes of drift. Speech-linked
    head motion: the head moves `speech_gain` more while speaking, and a phrase that starts after a
    pause may nod the head (`nod` degrees, with chance `emphasis_p`).
    """

    enabled: bool = True  # False: only the mouth and chin move (--still)
    blinks: bool = True
    blink_rate: float = 20.0  # a minute: conversation's range is 10.5-32.5 (s1 blinks ~39 while reading GRID's sentences)
    head: float = 1.0  # scale of all head motion (0: none)
    yaw: float = 3.5
    pitch: float = 2.2
    roll: float = 1.6
    shift: float = 0.015
    head_hz: float = 0.2
    brow_hz: float = 1.5  # the network's brows through a critically damped low-pass filter: the face mesh's frame-to-frame jitter, which it learned too, removed
    speech_gain: float = 0.25
    nod: float = 1.5
    emphasis_p: float = 0.6  # chance that a phrase after a pause nods the head
    net: ExpressionNetConfig = field(default_factory=ExpressionNetConfig)


@dataclass
class MotionConfig:
    """Speech -> displacement of the mouth and chin points (media.face.MOTION_POINTS) from the mouth at rest.

    Displacements are in units of the rest mouth's width, in the face's own upright frame, so the
    same numbers move a small mouth less than a wide one. `gain` scales them at inference only.
    """

    audio: AudioEncoderConfig = field(default_factory=lambda: AudioEncoderConfig(channels=(16, 32, 64, 64, 128), fc=128, dim=128))
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    hidden: int = 128
    points: int = 53  # len(MOTION_POINTS)
    gain: float = 1.0
    seq_disc: MotionDiscriminatorConfig = field(default_factory=MotionDiscriminatorConfig)
    refiner: RefinerConfig = field(default_factory=lambda: RefinerConfig())
    expression: ExpressionConfig = field(default_factory=ExpressionConfig)


@dataclass
class StreamConfig:
    """How a trainer reads its shards (talkface.data.stream): each process its own shards, a few at
    a time, their samples shuffled among each other; speakers balanced; corrupt samples skipped."""

    workers: int = 0  # processes decoding samples (0: the training process itself)
    mix: int = 8  # shards read together, their samples shuffled among each other
    balance_speakers: bool = True  # an epoch takes at most the median speaker's number of clips from any speaker
    max_bad_shards: float = 0.05  # share of shards with unreadable samples past which training stops


@dataclass
class RefinerConfig:
    """The mouth refiner (talkface.render.refine): what a warp cannot show, drawn over the warped mouth.

    It sees a mouth crop of the warped frame: a box `box_width` inter-ocular distances wide and half as
    high, centred 0.1 of that distance below the mouth corners, upright in the face's frame, resampled to
    (height, width), plus a map of the new mouth opening, and the `audio_steps` MFCC columns around the
    frame. The seed's identity encoder and frame decoder (sized by `channels`, `dim`) and its audio
    window encoder (`audio_channels`, `audio_dim`) give a corrected crop; its change is pasted back with
    soft edges.
    """

    enabled: bool = False
    height: int = 64
    width: int = 128
    box_width: float = 1.4
    channels: tuple[int, ...] = (16, 32, 64, 96, 128)  # the identity encoder's 5 conv layers
    dim: int = 64
    audio_steps: int = 20  # MFCC columns (10 ms each) centred on the frame
    audio_channels: tuple[int, ...] = (16, 32, 64, 64, 64)  # the audio window encoder's 5 conv layers
    audio_dim: int = 32
    disc_channels: tuple[int, ...] = (16, 32, 64, 128)  # the frame discriminator's 4 conv+pool layers
    # training (talkface train-refiner): GRID frame i warped to frame j's mouth -> the real frame j
    videos: int = 450  # training videos (8 windows each), spread over the training split
    steps: int = 2500
    batch_size: int = 6  # windows of `window` consecutive frames
    window: int = 5  # the sync expert's frames
    g_lr: float = 5e-4
    d_lr: float = 2e-4
    l1: float = 1.0
    mouth_weight: float = 4.0  # extra L1 weight inside the (dilated) mouth opening
    ssim: float = 3.0  # weight of 1 - SSIM (luma, 7x7 windows) to the real crop
    adv: float = 0.01
    sync: float = 0.05
    seed: int = 0
    threads: int = 2
    log_every: int = 50
    eval_every: int = 250  # held-out error of the warp and the refined crops
    checkpoint_every: int = 250
    data: StreamConfig = field(default_factory=StreamConfig)


@dataclass
class AugmentConfig:
    """Voice augmentation of the motion model's training audio, so that other voices move the mouth too.

    Each clip gets `variants` augmented copies besides the original, drawn once when the data set is
    loaded: played faster or slower (pitch, formants and tempo together; the landmarks are resampled
    in time to match), half of them at a tempo of their own (pitch and tempo drawn apart), louder or
    softer, with noise, reverberation and band-limiting.
    """

    variants: int = 4
    speed: tuple[float, float] = (0.8, 1.3)  # pitch (and formants) and tempo, each in this range
    pitch_p: float = 0.5  # the tempo drawn apart from the pitch
    gain_db: tuple[float, float] = (-20.0, 10.0)
    snr_db: tuple[float, float] = (10.0, 40.0)
    noise_p: float = 0.5
    reverb_p: float = 0.3
    reverb_s: tuple[float, float] = (0.1, 0.6)  # RT60
    band_p: float = 0.3


@dataclass
class LossConfig:
    frame_adv: float = 1.0
    seq_adv: float = 0.2
    l1: float = 400.0
    lower_face_weight: float = 3.0  # L1 weight of the lower half of the face relative to the upper
    # the motion model: coordinates, their frame-to-frame change, and the sequence discriminator
    coord: float = 1.0
    velocity: float = 2.0
    motion_adv: float = 0.02


@dataclass
class OptimConfig:
    g_lr: float = 2e-3
    d_lr: float = 2e-5
    betas: tuple[float, float] = (0.5, 0.999)
    warmup_steps: int = 0
    grad_clip: float = 10.0


@dataclass
class TrainConfig:
    steps: int = 10000
    batch_size: int = 8
    clip_frames: int = 16
    frames_per_clip_d: int = 2  # frames sampled uniformly from each clip for the frame discriminator
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    amp: bool = True  # mixed precision, on CUDA only


KINDS = ("frames", "motion")


@dataclass
class Config:
    name: str = "paper"
    # "frames": the seed's direct generator draws the face crop; "motion": speech moves the mouth's
    # landmarks and a warp moves the photo's own pixels (talkface.render.mouth)
    kind: str = "frames"
    audio: AudioConfig = field(default_factory=AudioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: StreamConfig = field(default_factory=StreamConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SyncConfig:
    """The lip-sync expert (metrics.sync): its inputs, networks and contrastive training.

    A sample is `frames` consecutive grayscale mouth crops and the MFCC columns (10 ms each) of the
    same stretch of time, cut from the centre of the middle frame's MFCC window.
    """

    name: str = "sync"
    audio: AudioConfig = field(default_factory=AudioConfig)
    frames: int = 5
    crop_height: int = 32
    crop_width: int = 64
    margin: int = 2  # extra pixels around each crop in the training cache, for random shifts
    box_width: float = 1.4  # mouth box width in inter-ocular distances (height: width / 2)
    audio_steps: int = 20  # 200 ms: the 5 frames' span
    video_channels: tuple[int, ...] = (16, 32, 64, 128)  # stride-2 conv layers
    audio_channels: tuple[int, ...] = (16, 32, 64)
    dim: int = 128
    max_offset: int = 15  # offsets searched by the metric, in frames
    min_shift: int = 3  # shifted negatives are at least this many frames off
    steps: int = 1300
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_clips: int = 100  # synthetic data: the clips held out (videos are split by `talkface.data.cut`)
    synthetic_clips: int = 48  # size of the synthetic data set (--data synthetic)
    synthetic_frames: int = 50
    seed: int = 0
    log_every: int = 50
    time_limit_s: float = 0.0  # stop after this many seconds of training (0: no limit)
    threads: int = 1  # on a shared CPU, more threads than free cores only wait on each other
    checkpoint_every: int = 250
    data: StreamConfig = field(default_factory=StreamConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def paper() -> Config:
    """The seed's sizes: 3x128x96 faces, 50-d identity, 10-d noise, 2-layer GRUs, lr G 2e-3 / D 2e-5."""
    return Config(name="paper")


def tiny() -> Config:
    """Small frames (48 x 32) and few channels, for tests and quick experiments on a CPU."""
    return Config(
        name="tiny",
        model=ModelConfig(
            height=48,
            width=32,
            audio=AudioEncoderConfig(channels=(8, 16, 16, 32, 32), fc=64, dim=32),
            identity=IdentityEncoderConfig(channels=(8, 16, 32, 32, 64), dim=16, first_stride=1),
            noise=NoiseConfig(),
            frame_disc=FrameDiscriminatorConfig(channels=(8, 16, 32, 32), fc=32),
            seq_disc=SequenceDiscriminatorConfig(channels=(8, 16, 16, 32), audio_dim=32, hidden=32, fc=32),
        ),
        optim=OptimConfig(g_lr=2e-3, d_lr=2e-5),
        train=TrainConfig(steps=400, batch_size=8, clip_frames=12, log_every=10, checkpoint_every=100),
    )


def motion() -> Config:
    """The default model: the seed's audio encoder and noise generator predict mouth and chin motion
    (a coordinate, velocity and sequence-discriminator loss); a warp moves the photo's own pixels."""
    return Config(
        name="motion",
        kind="motion",
        optim=OptimConfig(g_lr=1e-3, d_lr=2e-5, warmup_steps=50),
        train=TrainConfig(steps=1200, batch_size=16, clip_frames=32, ema_decay=0.995, log_every=25, checkpoint_every=200),
    )


def motion_tiny() -> Config:
    """The motion model with few channels and no voice augmentation, for tests."""
    cfg = motion()
    cfg.name = "motion-tiny"
    cfg.motion = MotionConfig(
        audio=AudioEncoderConfig(channels=(8, 16, 16, 32, 32), fc=64, dim=32),
        hidden=32,
        seq_disc=MotionDiscriminatorConfig(hidden=32, audio_dim=16, fc=32),
    )
    cfg.augment = AugmentConfig(variants=0)
    cfg.train = TrainConfig(steps=200, batch_size=8, clip_frames=24, ema_decay=0.99, log_every=10, checkpoint_every=100)
    return cfg


PRESETS = {"motion": motion, "paper": paper, "tiny": tiny, "motion-tiny": motion_tiny}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise ValueError(f"unknown config preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]()


def _coerce(value: str, current: Any) -> Any:
    if isinstance(current, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if isinstance(current, str):
        return value
    parsed = ast.literal_eval(value)
    if isinstance(current, float) and isinstance(parsed, int):
        parsed = float(parsed)
    if isinstance(current, tuple) and isinstance(parsed, list):
        parsed = tuple(parsed)
    if type(parsed) is not type(current):
        raise ValueError(f"expected {type(current).__name__}, got {value!r}")
    return parsed


def override(cfg: Config, assignments: list[str]) -> Config:
    """Apply `section.key=value` strings, type-checked against the current values."""
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        path, value = item.split("=", 1)
        *parents, leaf = path.strip().split(".")
        node: Any = cfg
        for p in parents:
            if not dataclasses.is_dataclass(node) or not hasattr(node, p):
                raise ValueError(f"unknown config key {path!r}")
            node = getattr(node, p)
        if not dataclasses.is_dataclass(node) or leaf not in {f.name for f in dataclasses.fields(node)}:
            raise ValueError(f"unknown config key {path!r}")
        current = getattr(node, leaf)
        if dataclasses.is_dataclass(current):
            raise ValueError(f"config key {path!r} is a section, not a value")
        try:
            setattr(node, leaf, _coerce(value.strip(), current))
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"bad value for {path!r}: {e}") from None
    return cfg


def from_dict(data: dict[str, Any], cls: type = Config) -> Any:
    """Rebuild a Config (or another top-level config such as SyncConfig) from `to_dict` output."""

    def build(cls: type, values: dict[str, Any]) -> Any:
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in values:
                continue
            v = values[f.name]
            default = getattr(cls(), f.name)
            if dataclasses.is_dataclass(default):
                v = build(type(default), v)
            elif isinstance(default, tuple):
                v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            kwargs[f.name] = v
        return cls(**kwargs)

    return build(cls, data)
