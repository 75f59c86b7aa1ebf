"""Image metrics: fidelity to ground truth (PSNR, SSIM, landmark distance), identity, stability, sharpness."""
from __future__ import annotations

import cv2
import numpy as np

from talkface.media.face import LIPS
from talkface.metrics.landmarks import Box, clip_box, detect_landmarks, face_box, fallback_mouth_box, inter_ocular, mouth_box
from talkface.metrics.registry import register

MESH = 468  # face-mesh points without the iris points


def _check_pair(frames: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(frames), len(real))
    if frames.shape[1:] != real.shape[1:]:
        raise ValueError(f"generated frames {frames.shape[1:]} and real frames {real.shape[1:]} differ in size")
    if n == 0:
        raise ValueError("no frames to compare")
    return frames[:n], real[:n]


def _landmarks(frames: np.ndarray, given: np.ndarray | None) -> np.ndarray:
    return detect_landmarks(frames) if given is None else given[: len(frames)]


def region(shape: tuple[int, ...], landmarks: np.ndarray | None) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the mouth: from the clip's landmarks, else the lower middle of the frame."""
    box = clip_box(landmarks, mouth_box) if landmarks is not None else None
    return (box or fallback_mouth_box(shape)).bounds(shape)


def luma(frames: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of RGB uint8 (..., H, W, 3) -> float64 (..., H, W) in 0..255."""
    return frames.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def psnr_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of uint8 images (T, ...) over all pixels and channels; inf when identical."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(255.0**2 / mse)


def mean_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-frame PSNR over the frames that differ; infinite only when every frame is identical.

    An identical frame's PSNR is infinite, so one such frame (a clip made from its first frame
    starts with it) would make the whole mean infinite.
    """
    p = psnr_frames(a, b)
    differ = p[np.isfinite(p)]
    return float(differ.mean()) if len(differ) else float("inf")


def ssim_image(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM (Wang et al. 2004) of two gray images in 0..255: 11x11 Gaussian window, sigma 1.5."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def ssim_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame SSIM on luma: (T, H, W, 3) x2 -> (T,), 1 when identical."""
    return np.array([ssim_image(x, y) for x, y in zip(luma(a), luma(b))])


@register("psnr")
def psnr(frames: np.ndarray, real: np.ndarray, real_landmarks: np.ndarray | None = None) -> dict[str, float]:
    """Peak signal-to-noise ratio against the real frames: psnr (whole frame) and psnr_mouth.

    Per frame 10 log10(255^2 / MSE) over all pixels and RGB channels, averaged over the frames
    that differ; in dB, higher is better, infinite only for identical clips. The mouth region is a box 1.4 inter-ocular
    distances wide around the real video's lips (face mesh), fixed for the clip.
    """
    frames, real = _check_pair(frames, real)
    y0, y1, x0, x1 = region(real.shape[1:3], real_landmarks)
    return {"psnr": mean_psnr(frames, real), "psnr_mouth": mean_psnr(frames[:, y0:y1, x0:x1], real[:, y0:y1, x0:x1])}


@register("ssim")
def ssim(frames: np.ndarray, real: np.ndarray, real_landmarks: np.ndarray | None = None) -> dict[str, float]:
    """Structural similarity against the real frames: ssim (whole frame) and ssim_mouth.

    SSIM of Wang et al. (2004) on luma with an 11x11 Gaussian window (sigma 1.5), averaged over
    pixels and frames; unitless, at most 1 (identical), higher is better. Mouth region as for psnr.
    """
    frames, real = _check_pair(frames, real)
    y0, y1, x0, x1 = region(real.shape[1:3], real_landmarks)
    return {"ssim": float(np.mean(ssim_frames(frames, real))), "ssim_mouth": float(np.mean(ssim_frames(frames[:, y0:y1, x0:x1], real[:, y0:y1, x0:x1])))}


@register("lmd")
def lmd(frames: np.ndarray, real: np.ndarray, landmarks: np.ndarray | None = None, real_landmarks: np.ndarray | None = None) -> dict[str, float]:
    """Landmark distance to the real frames: lmd_mouth (40 lip points) and lmd_face (468 mesh points).

    Mean euclidean distance between corresponding face-mesh landmarks of generated and real frames,
    divided by the real frame's inter-ocular distance, averaged over frames where both faces are
    found; unitless (fraction of the eye distance), lower is better. NaN if no frame has both.
    """
    frames, real = _check_pair(frames, real)
    gen, ref = _landmarks(frames, landmarks), _landmarks(real, real_landmarks)
    ok = ~(np.isnan(gen).any((1, 2)) | np.isnan(ref).any((1, 2)))
    if not ok.any():
        return {"lmd_mouth": float("nan"), "lmd_face": float("nan")}
    gen, ref = gen[ok], ref[ok]
    iod = inter_ocular(ref)[:, None]
    dist = np.linalg.norm(gen[:, :MESH] - ref[:, :MESH], axis=-1) / iod
    return {"lmd_mouth": float(dist[:, list(LIPS)].mean()), "lmd_face": float(dist.mean())}


def _face_crop(image: np.ndarray, lm: np.ndarray | None, size: tuple[int, int] = (128, 96)) -> np.ndarray:
    if lm is None or np.isnan(lm).any():
        box = Box(image.shape[1] / 2, image.shape[0] / 2, image.shape[1], image.shape[0])
    else:
        box = face_box(lm, size[0] / size[1])
    return box.crop(image, size)


@register("identity")
def identity(frames: np.ndarray, still: np.ndarray, landmarks: np.ndarray | None = None) -> dict[str, float]:
    """Likeness of the upper face to the still image: upper_face_ssim.

    Each frame and the still are cropped to their face box (face mesh; 128x96, the whole image when
    no face is found) and the SSIM of the upper halves (forehead, eyes, nose: what speech should not
    change) is averaged over frames; unitless, at most 1, higher is better.
    """
    lms = _landmarks(frames, landmarks)
    still_crop = _face_crop(still, detect_landmarks([still])[0])
    top = still_crop.shape[0] // 2
    crops = np.stack([_face_crop(f, lm) for f, lm in zip(frames, lms)])
    return {"upper_face_ssim": float(np.mean(ssim_frames(crops[:, :top], np.broadcast_to(still_crop[:top], crops[:, :top].shape))))}


@register("jitter")
def jitter(frames: np.ndarray, landmarks: np.ndarray | None = None) -> dict[str, float]:
    """Frame-to-frame landmark shake: landmark_jitter.

    Mean norm of the landmarks' acceleration x[t+1] - 2 x[t] + x[t-1] over the 468 mesh points and
    all frame triples with a face, divided by the inter-ocular distance; unitless per frame^2,
    lower is steadier (compare with the real video: speech moves the lips too).
    """
    found = _landmarks(frames, landmarks)
    if len(found) < 3:
        return {"landmark_jitter": float("nan")}
    lms = found[:, :MESH]
    acc = np.linalg.norm(lms[2:] - 2 * lms[1:-1] + lms[:-2], axis=-1).mean(-1) / inter_ocular(found)[1:-1]
    return {"landmark_jitter": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")}


def laplacian_variance(gray: np.ndarray) -> float:
    return float(cv2.Laplacian(gray.astype(np.float64), cv2.CV_64F).var())


@register("sharpness")
def sharpness(frames: np.ndarray, real: np.ndarray | None = None, landmarks: np.ndarray | None = None, real_landmarks: np.ndarray | None = None) -> dict[str, float]:
    """Detail in the mouth region: mouth_sharpness, and mouth_sharpness_ratio when real frames are given.

    Variance of the Laplacian of the mouth region's luma (box as for psnr), averaged over frames
    (gray levels^2; higher is sharper). The ratio divides it by the same measure on the real
    frames: 1 matches the real video, below 1 is blurrier.
    """
    if real is not None:
        frames, real = _check_pair(frames, real)
    ref_lms = real_landmarks if real is not None else landmarks
    if ref_lms is None:
        ref_lms = detect_landmarks(real if real is not None else frames)
    y0, y1, x0, x1 = region(frames.shape[1:3], ref_lms)
    measure = lambda v: float(np.mean([laplacian_variance(g) for g in luma(v[:, y0:y1, x0:x1])]))
    out = {"mouth_sharpness": measure(frames)}
    if real is not None:
        base = measure(real)
        out["mouth_sharpness_ratio"] = out["mouth_sharpness"] / base if base > 0 else float("nan")
    return out
