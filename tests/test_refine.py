"""The mouth refiner: crop geometry, paste-back, where it may change pixels, and that training learns."""
import dataclasses
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from talkface.checkpoint import default_sync_expert, load_generator, save_release, save_sync_expert
from talkface.config import AudioConfig, RefinerConfig, SyncConfig, preset
from talkface.data.refine import RefineWindows
from talkface.errors import TalkfaceError
from talkface.media.face import LIPS_INNER, MOTION_POINTS, MOUTH_CORNERS, detect_faces
from talkface.models.motion import MotionModel
from talkface.models.refiner import MouthRefiner
from talkface.models.sync_expert import SyncExpert
from talkface.render.refine import Refinement, crop_mouth, edge_fade, face_frame, mouth_matrix, opening_map, paste_change
from talkface.render.rig import FaceRig
from talkface.training.loop import Trainer
from talkface.training.refiner import RefinerTask, loss_expert
from talkface.render.mouth import close_mouth, open_mouth

CORNERS = [MOTION_POINTS.index(i) for i in MOUTH_CORNERS]
NOSE_TIP = 1
SPEECH = np.random.default_rng(0).normal(0, 1, (AudioConfig.n_mfcc, AudioConfig().steps)).astype(np.float32)  # a frame's MFCC window


def opening_motion(amount: float = 0.25) -> np.ndarray:
    """Motion (53, 2) that drops the lower lip (outer and inner loop) and the chin: the mouth opens."""
    motion = np.zeros((len(MOTION_POINTS), 2))
    motion[list(range(11, 20)) + list(range(31, 40)), 1] = amount
    motion[40:, 1] = 0.8 * amount
    return motion


@pytest.fixture(scope="module")
def face(face_image):
    return detect_faces(face_image)[0]


def noisy_refiner(cfg: RefinerConfig, seed: int = 0) -> MouthRefiner:
    """A refiner whose (random) last layer is not zero, so that it changes what it sees."""
    torch.manual_seed(seed)
    net = MouthRefiner(cfg)
    with torch.no_grad():
        net.decoder.t6.weight.normal_(0, 0.05)
    return net.eval()


def test_mouth_crop_is_centred_on_the_mouth_upright_and_sized_by_the_eyes(face):
    cfg = RefinerConfig()
    lm = face.landmarks
    u, iod = face_frame(lm)
    M = mouth_matrix(lm[list(MOUTH_CORNERS)], u, iod, cfg)
    corners = lm[list(MOUTH_CORNERS)] @ M[:, :2].T + M[:, 2]
    # the corners sit level, left and right of the middle, a little above the crop's centre
    assert abs(corners[0, 1] - corners[1, 1]) < 1.0
    assert corners[0, 0] < cfg.width / 2 < corners[1, 0]
    assert corners.mean(0)[1] == pytest.approx(cfg.height / 2 - 0.1 * cfg.width / cfg.box_width, abs=0.5)
    # a face twice as large gives the same crop geometry
    M2 = mouth_matrix(2 * lm[list(MOUTH_CORNERS)], u, 2 * iod, cfg)
    assert np.allclose((2 * lm[list(MOUTH_CORNERS)]) @ M2[:, :2].T + M2[:, 2], corners)


def test_opening_map_covers_the_inside_of_the_lips(face, face_image):
    cfg = RefinerConfig()
    lm = open_mouth(close_mouth(face.landmarks), 0.4)
    u, iod = face_frame(lm)
    M = mouth_matrix(lm[list(MOUTH_CORNERS)], u, iod, cfg)
    inside = opening_map(lm[MOTION_POINTS], M, cfg)
    assert inside.shape == (cfg.height, cfg.width) and inside.max() == 1.0
    centre = (lm[13] + lm[14]) / 2 @ M[:, :2].T + M[:, 2]  # between the middle of the inner lips
    assert inside[int(centre[1]), int(centre[0])] == 1.0
    assert inside[:3].max() == 0 and inside[-3:].max() == 0
    closed = opening_map(close_mouth(face.landmarks)[MOTION_POINTS], M, cfg)
    assert closed.sum() < 0.2 * inside.sum()


def test_crop_of_a_large_face_matches_the_small_one(face, face_image):
    cfg = RefinerConfig()
    lm = face.landmarks
    u, iod = face_frame(lm)
    small = crop_mouth(face_image, mouth_matrix(lm[list(MOUTH_CORNERS)], u, iod, cfg), cfg)
    big_image = cv2.resize(face_image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    big = crop_mouth(big_image, mouth_matrix(3 * lm[list(MOUTH_CORNERS)] + 1, u, 3 * iod, cfg), cfg)
    assert np.abs(small.astype(float) - big.astype(float)).mean() < 6


def test_edge_fade_is_zero_on_the_border_and_one_inside():
    fade = edge_fade(RefinerConfig())
    assert fade[0].max() == 0 and fade[-1].max() == 0 and fade[:, 0].max() == 0 and fade[:, -1].max() == 0
    assert fade[fade.shape[0] // 2, fade.shape[1] // 2] == 1.0


def test_paste_change_changes_only_the_crop_and_nothing_for_no_change(face_image):
    M = np.array([[0.5, 0.0, -40.0], [0.0, 0.5, -60.0]])  # a crop of picture x 80..336, y 120..248
    zero = np.zeros((64, 128, 3), np.float32)
    assert np.array_equal(paste_change(face_image, zero, M), face_image)
    out = paste_change(face_image, zero + 50, M)
    changed = np.any(out != face_image, axis=2)
    ys, xs = np.nonzero(changed)
    assert xs.min() >= 79 and xs.max() <= 337 and ys.min() >= 119 and ys.max() <= 249
    assert changed[130:240, 90:320].all()


def test_an_untrained_refiner_keeps_the_warp(face_image, face):
    cfg = RefinerConfig(enabled=True)
    torch.manual_seed(0)
    plain, refined = FaceRig(face_image, face), FaceRig(face_image, face, refiner=MouthRefiner(cfg).eval())
    motion = opening_motion()
    a, b = plain.render(motion, SPEECH), refined.render(motion, SPEECH)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_refiner_changes_only_the_mouth_box_below_the_nose(face_image, face):
    rig = FaceRig(face_image, face, refiner=noisy_refiner(RefinerConfig(enabled=True)))
    plain = FaceRig(face_image, face)
    motion = opening_motion()
    a, b = plain.render(motion, SPEECH), rig.render(motion, SPEECH)
    changed = np.any(a != b, axis=2)
    assert changed.sum() > 150  # the opening of a mouth about 90 px wide
    ys, xs = np.nonzero(changed)
    lm = face.landmarks
    assert ys.min() > lm[NOSE_TIP, 1]
    u, iod = face_frame(lm)
    # only inside the moved mouth and over the lips' inner edges: within a tenth of the eye distance of the inner loop
    lips = np.zeros(changed.shape, np.uint8)
    cv2.fillPoly(lips, [np.round(rig.target(motion)[[MOTION_POINTS.index(i) for i in LIPS_INNER]]).astype(np.int32)], 1)
    r = int(np.ceil(0.1 * iod))
    near = cv2.dilate(lips, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))).astype(bool)
    assert not (changed & ~near).any()


def test_the_refiner_draws_light_and_shade_in_the_hue_of_the_faces_light(face_image, face):
    rig = FaceRig(face_image, face, refiner=noisy_refiner(RefinerConfig(enabled=True)))
    motion = opening_motion()
    change = rig.render(motion, SPEECH).astype(float) - FaceRig(face_image, face).render(motion, SPEECH)
    strong = np.abs(change).max(-1) > 20
    assert strong.sum() > 20
    tint = rig.mouth.skin / (rig.mouth.skin @ [0.299, 0.587, 0.114])
    assert tint[0] > tint[2]  # the example's skin is warm
    # every changed pixel moves along the skin's hue: the change over the tint is the same in R, G and B
    along = change[strong] / tint
    assert np.abs(along - along.mean(-1, keepdims=True)).max() < 0.1 * np.abs(along).mean() + 2


def test_what_the_refiner_draws_follows_the_speech(face_image, face):
    rig = FaceRig(face_image, face, refiner=noisy_refiner(RefinerConfig(enabled=True)))
    motion = opening_motion()
    a, b = rig.render(motion, SPEECH), rig.render(motion, -SPEECH)
    assert np.any(a != b)
    assert np.array_equal(a, rig.render(motion, SPEECH.copy()))


def test_a_mouth_the_photo_can_show_is_left_to_the_warp(face_image, face):
    """At rest (the example's mouth is closed): nothing was painted, so the refiner changes nothing."""
    rig = FaceRig(face_image, face, refiner=noisy_refiner(RefinerConfig(enabled=True)))
    plain = FaceRig(face_image, face)
    rest = np.zeros((len(MOTION_POINTS), 2))
    assert np.array_equal(rig.render(rest, SPEECH), plain.render(rest, SPEECH))
    assert not np.array_equal(rig.render(opening_motion(), SPEECH), plain.render(opening_motion(), SPEECH))


def synthetic_windows(n: int, cfg: RefinerConfig, seed: int = 0) -> RefineWindows:
    """Mouth crops whose warp paints the opening dark where the real mouth shows a light band (teeth)."""
    rng = np.random.default_rng(seed)
    h, w, f = cfg.height, cfg.width, cfg.window
    ys, xs = np.mgrid[0:h, 0:w]
    warped = np.empty((n, f, h, w, 3), np.uint8)
    opening = np.empty((n, f, h, w), np.uint8)
    skin = rng.uniform(120, 200, (n, 1, 1, 1, 3))
    base = np.broadcast_to(skin, (n, f, h, w, 3)).copy()
    for i in range(n):
        for j in range(f):
            gap = rng.uniform(0.08, 0.3) * h
            inside = ((xs - w / 2) / (0.3 * w)) ** 2 + ((ys - h / 2) / gap) ** 2 < 1
            opening[i, j] = inside * 255
            base[i, j][inside] = 40
    warped[:] = np.clip(base + rng.normal(0, 3, base.shape), 0, 255)
    real = warped.copy()
    teeth = (opening > 0) & (np.arange(h)[None, None, :, None] < h / 2)
    real[teeth] = 230
    speech = rng.normal(0, 1, (n, f, 13, cfg.audio_steps)).astype(np.float32)
    return RefineWindows(warped, real, opening, opening.copy(), warped[:, 0].copy(), speech, rng.normal(0, 1, (n, 13, 20)).astype(np.float32))


@pytest.fixture(scope="module")
def small_expert(tmp_path_factory):
    cfg = SyncConfig(crop_height=16, crop_width=32, seed=3)
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("expert") / "loss_expert.safetensors"
    save_sync_expert(path, SyncExpert(cfg), cfg)
    return path


def write_windows(out, data: RefineWindows, val: int) -> str:
    """Window shards as `data.refine.cut_windows` writes them: the last `val` windows held out."""
    from talkface.data.refine import FIELDS
    from talkface.data.shards import ShardWriter, encode_npz

    for split, picks in (("train", range(len(data) - val)), ("val", range(len(data) - val, len(data)))):
        (out / split).mkdir(parents=True)
        writer = ShardWriter(str(out / split / "000000.tar"))
        for i in picks:
            writer.add(f"w{i:04d}", {"npz": encode_npz({f: getattr(data, f)[i] for f in FIELDS})}, speaker="s", frames=data.warped.shape[1])
        writer.close()
    return str(out)


def test_training_learns_what_the_warp_cannot_show(tmp_path, small_expert, motion_checkpoint):
    cfg = RefinerConfig(height=32, width=64, channels=(8, 16, 32, 32, 32), dim=32, disc_channels=(8, 16, 16, 16),
                        steps=150, batch_size=4, g_lr=2e-3, threads=1, eval_every=150)
    data = write_windows(tmp_path / "windows", synthetic_windows(40, cfg), val=8)
    run = tmp_path / "run"
    Trainer(RefinerTask(cfg, motion_checkpoint, loss_expert(small_expert)[0], data), data, run).fit(progress=False)
    report = json.loads((run / "report.json").read_text())
    # inside the mouth, the refined crops are much closer to the real ones than the warp is
    assert report["refined_mouth"] < 0.5 * report["warp_mouth"] and report["windows"] == 32
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["l1"] < rows[0]["l1"] and "refined_mouth" in rows[-1]
    model, full = load_generator(run / "generator.safetensors")
    assert full.motion.refiner.enabled and model.refiner is not None
    assert dataclasses.replace(full.motion.refiner, enabled=False) == cfg


def test_the_judge_cannot_be_the_training_loss():
    with pytest.raises(TalkfaceError, match="judges"):
        loss_expert(default_sync_expert())


def test_train_refiner_refuses_the_judge_in_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "talkface", "train-refiner", "--data", str(tmp_path), "--expert", default_sync_expert(),
                          "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert run.returncode != 0
    assert "judges" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "run" / "generator.safetensors").exists()


@pytest.fixture(scope="module")
def refined_checkpoint(tmp_path_factory):
    """A tiny motion model with a refiner that visibly changes the mouth (plumbing, not quality)."""
    cfg = preset("motion-tiny")
    cfg.motion.refiner = RefinerConfig(enabled=True)
    torch.manual_seed(0)
    model = MotionModel(cfg)
    model.refiner = noisy_refiner(cfg.motion.refiner)
    with torch.no_grad():
        model.head[-1].weight.mul_(4.0)
    path = tmp_path_factory.mktemp("refined") / "generator.safetensors"
    save_release(path, model, cfg)
    return path


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_graph_backends_run_the_refiner_like_torch(refined_checkpoint, face_image, speech_wav, backend):
    from talkface.pipeline import Animator

    frames = {name: list(Animator(refined_checkpoint, backend=name).generate(face_image, speech_wav, seed=1)) for name in ("torch", backend)}
    plain = list(Animator(refined_checkpoint).generate(face_image, speech_wav, seed=1))
    assert len(frames[backend]) == len(frames["torch"]) == len(plain) > 10
    diffs = [np.abs(a.astype(int) - b).max() for a, b in zip(frames["torch"], frames[backend])]
    assert max(diffs) <= 2


def test_dub_runs_the_refiner_graph_like_torch(refined_checkpoint, speech_wav, tmp_path):
    from conftest import write_face_video

    from talkface.pipeline import Animator

    write_face_video(tmp_path / "clip.mp4", 20)
    frames = {name: list(Animator(refined_checkpoint, backend=name).dub(tmp_path / "clip.mp4", speech_wav, fit="cut", seed=1)) for name in ("torch", "onnx")}
    assert len(frames["onnx"]) == len(frames["torch"]) == 20
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(frames["torch"], frames["onnx"])) <= 2


def test_the_refiner_graph_is_exported_once_and_read_back_for_the_same_weights(tmp_path, monkeypatch):
    from talkface import accel

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    exports = []
    export = accel._export
    monkeypatch.setattr(accel, "_export", lambda *a, **k: exports.append(1) or export(*a, **k))
    cfg = RefinerConfig(enabled=True)
    torch.manual_seed(0)
    refiner = noisy_refiner(cfg)
    inputs = [torch.rand(2, 3, cfg.height, cfg.width), torch.rand(2, 1, cfg.height, cfg.width), torch.rand(2, *refiner.speech_shape)]
    first = accel.RefinerGraph(refiner, "onnx")(*inputs)
    again = accel.RefinerGraph(refiner, "onnx")(*inputs)
    assert len(exports) == 1 and torch.equal(first, again)
    assert [p.suffix for p in (tmp_path / "cache" / "talkface").iterdir()] == [".onnx"]
    with torch.no_grad():
        next(refiner.parameters()).add_(0.1)  # other weights: exported anew, the answer changes
    changed = accel.RefinerGraph(refiner, "onnx")(*inputs)
    assert len(exports) == 2 and not torch.allclose(changed, first)
    (tmp_path / "a file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a file"))  # no folder can be made there: exported each time, no error
    for _ in range(2):
        assert torch.equal(accel.RefinerGraph(refiner, "onnx")(*inputs), changed)
    assert len(exports) == 4


def test_the_seeds_generator_refuses_a_graph_backend_for_dub_in_one_line(tiny_checkpoint, speech_wav, tmp_path, capsys):
    from conftest import write_face_video

    from talkface.cli import main

    write_face_video(tmp_path / "clip.mp4", 10)
    code = main(["dub", "--checkpoint", str(tiny_checkpoint), "--video", str(tmp_path / "clip.mp4"), "--audio", speech_wav,
                 "--out", str(tmp_path / "out.mp4"), "--backend", "onnx"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "dubs with torch only" in err[0]
    assert not (tmp_path / "out.mp4").exists()


def test_int8_backends_are_refused_for_the_motion_model(refined_checkpoint):
    from talkface.pipeline import Animator

    with pytest.raises(TalkfaceError, match="quantises the seed's frame generator"):
        Animator(refined_checkpoint, backend="onnx-int8")


def test_the_bundled_refiner_brings_held_out_mouths_closer_to_the_real_ones():
    """The shipped weights on a GRID sentence held out from their training: frames warped to the mouth
    shapes of other frames of the clip are closer to those real frames inside the mouth once refined."""
    from conftest import SHARED, no_grid

    from talkface.bundled import BUNDLED_MODEL, asset
    from talkface.data.refine import video_windows
    from talkface.training.refiner import held_out_l1

    path = SHARED / "data" / "grid_s1" / "video" / "bwat5a.mp4"
    if not path.exists():
        pytest.skip(no_grid(path))
    model, cfg = load_generator(asset(BUNDLED_MODEL))
    assert model.refiner is not None
    windows = video_windows(str(path), cfg.motion.refiner, sources=2, per_source=4)
    scores = held_out_l1(model.refiner, windows, np.arange(len(windows)), cfg.motion.refiner)
    assert scores["refined_mouth"] < 0.8 * scores["warp_mouth"]


def test_a_rig_of_the_part_of_a_large_picture_that_moves_renders_as_a_rig_of_all_of_it(face_image, motion_checkpoint):
    """The face small in a large picture: a rig made on its footprint alone renders the same frames
    (mouth opened and redrawn, lids shut, head turned), laid back in, and nothing outside it ever moves."""
    from talkface.expression import Expression
    from talkface.render.rig import footprint, lay

    refiner = load_generator(motion_checkpoint)[0].refiner
    picture = cv2.copyMakeBorder(face_image, 300, 240, 260, 300, cv2.BORDER_REPLICATE)
    face = detect_faces(picture)[0]
    x0, y0, x1, y1 = box = footprint(face, picture.shape[:2])
    assert all(v % 2 == 0 for v in box) and 0 < x0 < x1 < picture.shape[1] and 0 < y0 < y1 < picture.shape[0]
    whole = FaceRig(picture, face, 1.0, refiner)
    part = FaceRig(np.ascontiguousarray(picture[y0:y1, x0:x1]), face.moved(x0, y0), 1.0, refiner)
    outside = np.ones(picture.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    for amount, expression in [(0.0, None), (0.35, None), (0.35, Expression((0.9, 0.7), 0.03, (6.0, -3.0, 2.0), (0.02, -0.01)))]:
        a = whole.render(opening_motion(amount), SPEECH, expression)
        b = lay(picture.copy(), part.render(opening_motion(amount), SPEECH, expression), box)
        # float rounding: the head's map in picture pixels differs in its last bits, which moves a bicubic sample now and then
        assert np.abs(a.astype(int) - b).max() <= 3 and (a != b).mean() < 1e-4
        assert np.array_equal(a[outside], picture[outside])
    assert (a != picture).any(-1).sum() > 1000  # the turned head moved much of the box
