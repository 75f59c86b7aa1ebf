"""The rest of the face: blinks, brows and head motion, frame by frame, around the speech's mouth motion.

`Expressions` is a seeded stream: `step(speech)` takes one frame's MFCC window (the one the motion
model heard) and gives that frame's `Expression`. It is causal and keeps a fixed, small state, so
offline and live runs make the same frames, and one seed always makes the same motion.

- Blinks: a renewal process (gamma-distributed intervals, `ExpressionConfig.blink_rate` a minute on
  average), each blink following `blink_profile` in time (close fast, open slowly).
- Head: per axis (yaw, pitch, roll, and a small shift across and down the picture) white noise
  through a critically damped two-pole low-pass filter: smooth, mean-reverting motion with a stated
  corner frequency and standard deviation. The first frame is the photo's own pose.
- Speech: the loudness of the frame's audio (the MFCC's c0 at the window's centre) against slowly
  tracked floor and peak levels tells speech from pause. While speaking, the head moves
  `speech_gain` more; a phrase that starts after a pause may raise the brows and nod.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkface.config import AudioConfig, ExpressionConfig

PAUSE_FRAMES = 8  # a phrase "starts after a pause" when at least this many quiet frames (320 ms at 25 fps) came before it
PROFILE_MS = 40.0  # the spacing of `blink_profile`


@dataclass(frozen=True)
class Expression:
    """One frame's expression: lid closure per eye (0 open as in the photo, 1 shut), the brows' raise
    in face sizes, the head's rotation from the photo's pose in degrees (yaw, pitch, roll, see
    `talkface.geometry`) and its shift across and down the face in face sizes."""

    closure: tuple[float, float] = (0.0, 0.0)
    brow: float = 0.0
    pose: tuple[float, float, float] = (0.0, 0.0, 0.0)
    shift: tuple[float, float] = (0.0, 0.0)

    @property
    def moves_head(self) -> bool:
        return any(abs(a) > 1e-6 for a in self.pose + self.shift)


def _pulse(t: float, rise: float, hold: float, fall: float) -> float:
    """A smooth bump over time t (seconds) from 0: up over `rise`, flat for `hold`, down over `fall`."""
    if t < 0 or t > rise + hold + fall:
        return 0.0
    if t < rise:
        x = t / rise
    elif t < rise + hold:
        return 1.0
    else:
        x = 1 - (t - rise - hold) / fall
    return x * x * (3 - 2 * x)


class _LowPass:
    """White noise through a critically damped two-pole filter, scaled to unit standard deviation."""

    def __init__(self, hz: float, fps: float, n: int):
        self.r = float(np.exp(-2 * np.pi * hz / fps))
        r2 = self.r**2
        self.gain = float(np.sqrt((1 - r2) ** 3 / (1 + r2)))  # steady-state variance of the pole pair, undone
        self.y1 = self.y2 = np.zeros(n)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = 2 * self.r * self.y1 - self.r**2 * self.y2 + self.gain * x
        self.y2, self.y1 = self.y1, y
        return y


class Expressions:
    """Seeded, causal: `step(speech)` per video frame -> `Expression`. See the module's docstring."""

    def __init__(self, cfg: ExpressionConfig, audio: AudioConfig, seed: int = 0):
        self.cfg, self.fps = cfg, audio.fps
        self.dt = 1.0 / audio.fps
        self.centre = int(round(audio.steps * audio.centre))
        self.rng = np.random.default_rng([seed, 0x7A1C])  # apart from the noise the motion model draws
        self.head = _LowPass(cfg.head_hz, audio.fps, 5)
        self.t = 0.0
        self.next_blink = self._interval(first=True)
        self.blink_at = -1e9
        self.floor = self.peak = None
        self.quiet = PAUSE_FRAMES
        self.speaking = 0.0  # smoothed 0..1
        self.emphasis_at = -1e9

    def _interval(self, first: bool = False) -> float:
        """Seconds to the next blink: gamma-distributed, mean 60 / rate; the first no sooner than 0.4 s."""
        k = self.cfg.blink_regularity
        mean = 60.0 / max(self.cfg.blink_rate, 1e-3)
        gap = float(self.rng.gamma(k, mean / k))
        return self.t + (max(0.4, gap * self.rng.uniform(0.3, 1.0)) if first else max(gap, 0.25))

    def _loudness(self, speech: np.ndarray) -> float:
        c0 = np.asarray(speech, np.float64)[0]
        return float(c0[max(0, self.centre - 2): self.centre + 2].mean())

    def _voice(self, level: float) -> bool:
        """Whether this frame is speech: its loudness against a floor that follows quiet frames and a peak that follows loud ones."""
        if self.floor is None:
            self.floor, self.peak = level, level + 1e-3
        self.floor = level if level < self.floor else self.floor + 0.005 * (level - self.floor)
        self.peak = level if level > self.peak else self.peak - 0.005 * (self.peak - self.floor)
        span = self.peak - self.floor
        return span > 1.0 and level > self.floor + 0.35 * span  # c0 of silence and of speech lie about 2-3 apart

    def step(self, speech: np.ndarray) -> Expression:
        """The next frame's expression, for its MFCC window (n_mfcc, steps)."""
        cfg = self.cfg
        voiced = self._voice(self._loudness(speech))
        noise = self.rng.standard_normal(5)  # drawn every frame, whatever is enabled, so settings do not shift the seed's stream
        emphasis_draw = self.rng.random()
        if voiced and self.quiet >= PAUSE_FRAMES and emphasis_draw < cfg.emphasis_p:
            self.emphasis_at = self.t
        self.quiet = 0 if voiced else self.quiet + 1
        self.speaking += (float(voiced) - self.speaking) * (1 - np.exp(-self.dt / 0.5))

        closure = 0.0
        if self.t >= self.next_blink:
            self.blink_at, self.next_blink = self.t, self._interval()
        since = (self.t - self.blink_at) * 1000.0 / PROFILE_MS
        profile = cfg.blink_profile
        if cfg.blinks and 0 <= since < len(profile):
            closure = float(np.interp(since, np.arange(len(profile)), profile))

        head = self.head(noise) * (1 + cfg.speech_gain * self.speaking) * cfg.head
        since_emphasis = self.t - self.emphasis_at
        brow = cfg.brow * _pulse(since_emphasis, 0.15, 0.3, 0.45)
        nod = cfg.nod * cfg.head * _pulse(since_emphasis - 0.05, 0.2, 0.1, 0.4)
        self.t += self.dt
        return Expression(
            (closure, closure),
            brow,
            (float(head[0] * cfg.yaw), float(head[1] * cfg.pitch + nod), float(head[2] * cfg.roll)),
            (float(head[3] * cfg.shift), float(head[4] * cfg.shift)),
        )
