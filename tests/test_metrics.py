from pathlib import Path

import numpy as np
import pytest
import torch

from talkface.metrics import compute, list_metrics, requirements
from talkface.metrics.image import psnr_frames, ssim_frames
from talkface.metrics.landmarks import Box, mouth_aperture
from talkface.metrics.sync import curve_scores, offset_distances, silent, speech_envelope

from conftest import no_grid

GRID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "grid_s1"
CLIP = "swwv9a"  # the last clip by sorted id: held out from the shipped expert's training
FRAME_SAMPLES = 640  # one 25 fps frame of 16 kHz audio


@pytest.fixture(scope="module")
def grid_clip():
    path = GRID / "video" / f"{CLIP}.mp4"
    if not path.exists():
        pytest.skip(no_grid(path))
    from talkface.evaluate import read_video
    from talkface.media.audio import load_audio
    from talkface.metrics.landmarks import detect_landmarks

    frames, _ = read_video(path)
    return {"frames": frames, "audio": load_audio(path), "landmarks": detect_landmarks(frames)}


def test_registry_lists_every_metric_and_checks_inputs():
    assert set(list_metrics()) == {"lse", "aperture", "psnr", "ssim", "lmd", "identity", "jitter", "sharpness", "blinks", "head_motion"}
    assert requirements("psnr")[0] == {"frames", "real"}
    with pytest.raises(KeyError, match="unknown metric"):
        compute("fid", frames=np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="needs real"):
        compute("ssim", frames=np.zeros((3, 8, 8, 3), np.uint8))


def test_every_metric_is_documented():
    from talkface.metrics import get

    for name in list_metrics():
        doc = get(name).__doc__
        assert doc and ("higher" in doc or "lower" in doc), name


def test_psnr_and_ssim_of_a_clip_with_itself_and_with_noise():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (4, 48, 64, 3)).astype(np.uint8)
    same = compute("psnr", frames=clip, real=clip)
    assert same == {"psnr": float("inf"), "psnr_mouth": float("inf")}
    assert compute("ssim", frames=clip, real=clip) == pytest.approx({"ssim": 1.0, "ssim_mouth": 1.0})
    noisy = [np.clip(clip + rng.normal(0, s, clip.shape), 0, 255).astype(np.uint8) for s in (5, 20)]
    p = [psnr_frames(n, clip).mean() for n in noisy]
    s = [ssim_frames(n, clip).mean() for n in noisy]
    assert 30 < p[0] < 40 and p[1] < p[0]
    assert s[1] < s[0] < 1
    starts_alike = np.concatenate([clip[:1], noisy[0][1:]])  # a clip made from the real first frame
    assert compute("psnr", frames=starts_alike, real=clip)["psnr"] == pytest.approx(psnr_frames(noisy[0][1:], clip[1:]).mean())


def test_sync_curve_finds_the_offset_of_known_embeddings():
    rng = np.random.default_rng(1)
    audio = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(60, 16))).float(), dim=-1)
    video = audio[2 + 4 : 2 + 4 + 40]  # window w (centred on frame w + 2) looks like the audio 4 frames later
    c = curve_scores(offset_distances(video, audio, centre=2, max_offset=15), 15)
    assert c.offset == 4 and c.lse_d == pytest.approx(0.0, abs=1e-6) and c.lse_c > 1.0
    assert np.isnan(c.distances[0, 0]) and np.isfinite(c.distances[20]).all()  # runs off the clip's start / fits


def test_sync_curve_ignores_far_offsets_that_few_windows_reach():
    rng = np.random.default_rng(3)
    audio = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(21, 16))).float(), dim=-1)
    video = torch.nn.functional.normalize(audio[2:19] + 0.8 * torch.from_numpy(rng.normal(size=(17, 16))).float(), dim=-1)
    video[:4] = audio[2 + 12 : 2 + 16]  # 4 windows match audio 12 frames later: a perfect match of too few
    distances = offset_distances(video, audio, centre=2, max_offset=15)
    assert np.nanargmin(np.nanmean(distances, 0)) == 15 + 12  # a plain mean over what exists picks them
    c = curve_scores(distances, 15)
    assert c.offset == 0 and np.isnan(c.mean[15 + 12]) and np.isfinite(c.mean[15 - 6 : 15 + 7]).all()


def test_speech_envelope_and_silence():
    audio = np.zeros(10 * FRAME_SAMPLES, np.float32)
    audio[3 * FRAME_SAMPLES : 6 * FRAME_SAMPLES] = 0.5 * np.sin(np.arange(3 * FRAME_SAMPLES) / 5)  # 509 Hz
    env = speech_envelope(audio, 12)
    assert env.shape == (12,) and env[4] == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert env[0] < 1e-3 * env[4] and env[11] == 0  # before the tone: silence; past the audio's end: 0
    hum = 0.5 * np.sin(2 * np.pi * 50 * np.arange(10 * FRAME_SAMPLES) / 16000)
    assert speech_envelope(hum, 10).max() < 0.01  # mains hum lies outside the speech band
    quiet = silent(env)
    assert quiet[[0, 1, 7, 8, 9, 10, 11]].all() and not quiet[3:6].any()  # frames 2 and 6 border the tone


def test_jitter_grows_with_shake_and_aperture_reads_the_lips():
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 100, (478, 2)).astype(np.float32)
    base[468], base[473] = (30, 40), (70, 40)  # iris centres: inter-ocular distance 40
    steady = np.repeat(base[None], 20, 0) + np.linspace(0, 5, 20)[:, None, None]  # constant drift: no acceleration
    shaky = steady + rng.normal(0, 1, steady.shape)
    frames = np.zeros((20, 8, 8, 3), np.uint8)
    assert compute("jitter", frames=frames, landmarks=steady)["landmark_jitter"] == pytest.approx(0, abs=1e-5)
    assert compute("jitter", frames=frames, landmarks=shaky)["landmark_jitter"] > 0.05
    lips = steady.copy()
    for x, (upper, lower) in zip((40, 50, 60), ((82, 87), (13, 14), (312, 317))):
        lips[:, [upper, lower], 0] = x
        lips[:, upper, 1], lips[:, lower, 1] = 50, 58  # an 8 pixel gap: 0.2 eye distances
    assert mouth_aperture(lips) == pytest.approx(np.full(20, 0.2))


def test_box_crop_resamples_and_repeats_the_border():
    image = np.arange(100, dtype=np.uint8).reshape(10, 10)
    assert np.array_equal(Box(5, 5, 10, 10).crop(image, (10, 10)), image)
    assert Box(0, 0, 4, 4).crop(image, (4, 4))[0, 0] == 0  # outside: the corner pixel repeated
    assert Box(5, 5, 10, 10).crop(image, (5, 5)).shape == (5, 5)


def test_real_clip_is_in_sync(grid_clip):
    r = compute("lse", **grid_clip)
    unrelated = compute("lse", **{**grid_clip, "audio": grid_clip["audio"][::-1].copy()})
    assert abs(r["sync_offset"]) <= 1
    assert r["lse_c"] > 2 * unrelated["lse_c"] and r["lse_d"] < unrelated["lse_d"]


def test_audio_shifted_by_5_frames_is_found(grid_clip):
    late = np.concatenate([np.zeros(5 * FRAME_SAMPLES, np.float32), grid_clip["audio"]])
    early = grid_clip["audio"][5 * FRAME_SAMPLES :]
    assert abs(compute("lse", **{**grid_clip, "audio": late})["sync_offset"] - 5) <= 1
    assert abs(compute("lse", **{**grid_clip, "audio": early})["sync_offset"] + 5) <= 1


def test_frozen_face_scores_low_on_aperture_correlation(grid_clip):
    real = compute("aperture", **grid_clip)
    frozen = np.repeat(grid_clip["frames"][:1], len(grid_clip["frames"]), 0)
    still = compute("aperture", frames=frozen, audio=grid_clip["audio"])
    assert real["aperture_corr"] > 0.3
    assert abs(still["aperture_corr"]) < 0.15
    assert real["silence_aperture"] < real["speech_aperture"]


def test_ground_truth_metrics_of_a_real_clip_with_itself(grid_clip):
    f, lm = grid_clip["frames"], grid_clip["landmarks"]
    assert compute("psnr", frames=f, real=f, real_landmarks=lm)["psnr"] == float("inf")
    assert compute("ssim", frames=f, real=f, real_landmarks=lm)["ssim_mouth"] == pytest.approx(1.0)
    assert compute("lmd", frames=f, real=f, landmarks=lm, real_landmarks=lm) == {"lmd_mouth": 0.0, "lmd_face": 0.0}
    assert compute("sharpness", frames=f, real=f, landmarks=lm, real_landmarks=lm)["mouth_sharpness_ratio"] == pytest.approx(1.0)
    blurred = np.stack([__import__("cv2").GaussianBlur(x, (7, 7), 2) for x in f])
    assert compute("sharpness", frames=blurred, real=f, real_landmarks=lm)["mouth_sharpness_ratio"] < 0.5
    ident = compute("identity", frames=f, still=f[0], landmarks=lm)["upper_face_ssim"]
    assert 0.6 < ident < 1
    assert compute("jitter", frames=f, landmarks=lm)["landmark_jitter"] < 0.05


def test_blinks_are_counted_timed_and_sized():
    from talkface.metrics.expression import blink_events

    openness = np.full(250, 0.3)  # 10 s open, then three blinks: 3 frames below half depth each, the deepest at 0.2 of open
    for start in (40, 120, 200):
        openness[start : start + 5] = 0.3 * np.array([0.7, 0.35, 0.2, 0.45, 0.8])
    openness[60] = np.nan  # a frame without a face is not a blink
    events = blink_events(openness)
    assert [e[0] for e in events] == [42, 122, 202]
    assert all(e[1] == 3 and e[2] == pytest.approx(0.2) for e in events)


def test_head_motion_reads_spread_jumps_and_speech_against_pauses():
    from talkface.metrics import compute

    t = np.arange(500) / 25.0
    poses = np.stack([4 * np.sin(t), 2 * np.sin(0.7 * t), np.zeros_like(t)], 1)
    poses[100] = np.nan
    audio = np.zeros(20 * 16000, np.float32)
    audio[: 10 * 16000] = 0.1 * np.sin(2 * np.pi * 500 * np.arange(10 * 16000) / 16000)  # speech, then silence
    out = compute("head_motion", audio=audio, poses=poses)
    assert out["yaw_std"] == pytest.approx(4 / np.sqrt(2), rel=0.1) and out["roll_std"] == 0
    assert out["head_jump"] == pytest.approx(4 / 25, rel=0.05)
    assert 0.5 < out["head_speed_ratio"] < 2
