import pytest

from talkface.config import from_dict, override, paper, preset, tiny


def test_overrides_are_typed_and_checked():
    cfg = override(tiny(), ["train.steps=7", "optim.g_lr=1e-3", "train.amp=false", "model.identity.channels=[4,8,8,8,8]"])
    assert cfg.train.steps == 7 and cfg.optim.g_lr == 1e-3 and cfg.train.amp is False
    assert cfg.model.identity.channels == (4, 8, 8, 8, 8)
    with pytest.raises(ValueError, match="unknown config key"):
        override(tiny(), ["train.nope=1"])
    with pytest.raises(ValueError, match="bad value"):
        override(tiny(), ["train.steps=abc"])
    with pytest.raises(ValueError, match="key=value"):
        override(tiny(), ["train.steps"])


def test_config_round_trips_through_dict():
    for cfg in (tiny(), paper()):
        assert from_dict(cfg.to_dict()) == cfg


def test_paper_preset_has_the_seeds_numbers():
    cfg = preset("paper")
    assert (cfg.model.height, cfg.model.width) == (128, 96)
    assert cfg.model.identity.dim == 50 and cfg.model.noise.dim == 10 and cfg.model.noise.std == 0.77
    assert cfg.optim.g_lr == 2e-3 and cfg.optim.d_lr == 2e-5
    assert cfg.audio.fps == 25 and cfg.audio.n_mfcc == 13
    with pytest.raises(ValueError):
        preset("huge")


def test_lookahead_follows_window_and_centring():
    cfg = tiny().audio
    assert cfg.lookahead_ms == pytest.approx((34 * 10 + 25) / 2 - 20)
    cfg.centre = 1.0
    assert cfg.lookahead_ms == 0.0
