"""The rest of the face: blinks, brows and head motion, frame by frame, around the speech's mouth motion.

`Expressions` is a seeded stream: `step(speech)` takes one frame's MFCC window (the one the motion
model heard) and gives that frame's `Expression` (`steps` does a chunk's frames with one network call). It is causal and keeps a fixed, small state, so
offline and live runs make the same frames, and one seed always makes the same motion.

- Blinks and brows: the motion model's upper-face network (`models.expression.ExpressionNet`,
  learned from the training videos): its noise generator makes blinks spontaneous, the speech
  times them, and it is asked for `ExpressionConfig.blink_rate` blinks a minute. The brows pass a
  low-pass filter: the network learned the face mesh's frame-to-frame jitter with them.
- Head, learned: a network trained on videos whose heads move (`ExpressionNetConfig.head`) gives the
  head's pose itself, from its noise generator and the speech, scaled by `ExpressionConfig.head`.
- Head, shaped (the bundled network: its speaker's head was still): per axis (yaw, pitch, roll, and
  a small shift across and down the picture) one channel of that noise generator's coherent noise,
  through a critically damped two-pole low-pass filter: smooth, mean-reverting motion with a stated
  corner frequency and standard deviation. The first frame is the photo's own pose. Speech: the
  loudness of the frame's audio (the MFCC's c0 at the window's centre) against slowly tracked floor
  and peak levels tells speech from pause. While speaking, the head moves `speech_gain` more; a
  phrase that starts after a pause may nod.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from talkface.config import AudioConfig, ExpressionConfig
from talkface.models.expression import ExpressionNet
from talkface.threads import one_thread

PAUSE_FRAMES = 8  # a phrase "starts after a pause" when at least this many quiet frames (320 ms at 25 fps) came before it


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
    """A critically damped two-pole filter, scaled so that unit white noise comes out with unit standard
    deviation (`steady=False`) or a steady signal comes out as it went in (`steady=True`)."""

    def __init__(self, hz: float, fps: float, n: int, steady: bool = False):
        self.r = float(np.exp(-2 * np.pi * hz / fps))
        r2 = self.r**2
        # unit gain at 0 Hz, or the steady-state variance of the pole pair undone
        self.gain = (1 - self.r) ** 2 if steady else float(np.sqrt((1 - r2) ** 3 / (1 + r2)))
        self.y1 = self.y2 = np.zeros(n)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = 2 * self.r * self.y1 - self.r**2 * self.y2 + self.gain * x
        self.y2, self.y1 = self.y1, y
        return y


class Expressions:
    """Seeded, causal: `step(speech)` per video frame -> `Expression`. See the module's docstring.
    `net`: the motion model's upper-face network (`MotionModel.expression`)."""

    def __init__(self, cfg: ExpressionConfig, audio: AudioConfig, net: ExpressionNet, seed: int = 0):
        self.cfg, self.net, self.fps = cfg, net.eval(), audio.fps
        self.dt = 1.0 / audio.fps
        self.centre = int(round(audio.steps * audio.centre))
        self.rng = np.random.default_rng([seed, 0x7A1C])  # apart from the noise the motion model draws
        self.noise_rng = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 0xE7E]).generate_state(1)[0]))
        self.state = None
        self.head = _LowPass(cfg.head_hz, audio.fps, 5)
        self.brow = _LowPass(cfg.brow_hz, audio.fps, 1, steady=True)
        self.t = 0.0
        self.floor = self.peak = None
        self.quiet = PAUSE_FRAMES
        self.speaking = 0.0  # smoothed 0..1
        self.emphasis_at = -1e9

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

    @torch.inference_mode()
    def _net(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Consecutive frames' (closure, brow and any learned pose (T, face_channels), head drive (T, 5)) from the network in one call, its state carried."""
        mfcc = torch.as_tensor(np.asarray(windows, np.float32))[None]
        z = self.net.noise.sample(1, len(windows), generator=self.noise_rng)  # drawn frame by frame: any chunking draws the same
        # on one thread, as the motion model: split over threads, its small ops (an adaptive pooling took
        # 5 ms a call) waited on cores that the rendering processes keep busy
        with one_thread():
            face, drive, self.state = self.net.decode(mfcc, self.cfg.blink_rate, z, self.state)
        return face[0].numpy(), drive[0].numpy()

    def steps(self, windows: list[np.ndarray] | np.ndarray) -> list[Expression]:
        """The next frames' expressions, for their MFCC windows (T, n_mfcc, steps): the same, to float
        rounding, as stepping them one at a time."""
        if not len(windows):
            return []
        faces, drives = self._net(np.stack(windows))  # run every frame, whatever is enabled, so settings do not shift the seed's stream
        return [self._step(w, f, d) for w, f, d in zip(windows, faces, drives)]

    def step(self, speech: np.ndarray) -> Expression:
        """The next frame's expression, for its MFCC window (n_mfcc, steps)."""
        return self.steps([speech])[0]

    def _step(self, speech: np.ndarray, face: np.ndarray, drive: np.ndarray) -> Expression:
        cfg = self.cfg
        voiced = self._voice(self._loudness(speech))
        emphasis_draw = self.rng.random()
        if voiced and self.quiet >= PAUSE_FRAMES and emphasis_draw < cfg.emphasis_p:
            self.emphasis_at = self.t
        self.quiet = 0 if voiced else self.quiet + 1
        self.speaking += (float(voiced) - self.speaking) * (1 - np.exp(-self.dt / 0.5))

        closure = float(face[0]) if cfg.blinks else 0.0
        brow = float(self.brow(face[1:2].astype(np.float64))[0])
        t, self.t = self.t, self.t + self.dt
        if self.net.learns_pose:
            head = face[2:].astype(np.float64) * cfg.head
            return Expression((closure, closure), brow, tuple(map(float, head[:3])), tuple(map(float, head[3:])))
        head = self.head(drive.astype(np.float64)) * (1 + cfg.speech_gain * self.speaking) * cfg.head
        nod = cfg.nod * cfg.head * _pulse(t - self.emphasis_at - 0.05, 0.2, 0.1, 0.4)
        return Expression(
            (closure, closure),
            brow,
            (float(head[0] * cfg.yaw), float(head[1] * cfg.pitch + nod), float(head[2] * cfg.roll)),
            (float(head[3] * cfg.shift), float(head[4] * cfg.shift)),
        )
