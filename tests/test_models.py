import pytest
import torch

from talkface.config import paper, tiny
from talkface.models import (
    AudioEncoder,
    FrameDecoder,
    FrameDiscriminator,
    Generator,
    GeneratorState,
    IdentityEncoder,
    NoiseGenerator,
    SequenceDiscriminator,
)
from talkface.models.discriminators import pyramid_pool_1d


@pytest.fixture(scope="module")
def cfg():
    return tiny()


def test_module_shapes(cfg):
    m, a = cfg.model, cfg.audio
    mfcc = torch.randn(2, 5, a.n_mfcc, a.steps)
    codes, h = AudioEncoder(a, m.audio)(mfcc)
    assert codes.shape == (2, 5, m.audio.dim) and h.shape == (2, 2, m.audio.dim)
    enc = IdentityEncoder(m.identity, m.height, m.width)
    code, skips = enc(torch.randn(2, 3, m.height, m.width))
    assert code.shape == (2, m.identity.dim) and len(skips) == 4
    assert [s.shape[1] for s in skips] == list(m.identity.channels[:4])
    noise, _ = NoiseGenerator(m.noise)(torch.randn(2, 5, 10))
    assert noise.shape == (2, 5, 10)
    dec = FrameDecoder(m, m.audio.dim + m.identity.dim + 10, enc.bottleneck)
    assert dec(torch.randn(2, m.audio.dim + m.identity.dim + 10), skips).shape == (2, 3, m.height, m.width)
    assert FrameDiscriminator(m)(torch.randn(3, 3, m.height, m.width), torch.randn(3, 3, m.height, m.width)).shape == (3,)


def test_decoder_alternates_six_transposed_and_four_convs(cfg):
    dec = Generator(cfg).decoder
    kinds = [type(x).__name__ for x in dec.modules() if isinstance(x, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert kinds.count("ConvTranspose2d") == 6 and kinds.count("Conv2d") == 4
    assert kinds == ["ConvTranspose2d"] + ["ConvTranspose2d", "Conv2d"] * 4 + ["ConvTranspose2d"]


def test_paper_generator_makes_128x96_frames():
    cfg = paper()
    g = Generator(cfg).eval()
    with torch.no_grad():
        out = g(torch.rand(1, 3, 128, 96) * 2 - 1, torch.randn(1, 3, 13, cfg.audio.steps))
    assert out.shape == (1, 3, 3, 128, 96)
    assert out.abs().max() <= 1.0
    assert len(list(g.audio_encoder.window.convs)) == 5 and g.identity_encoder.dim == 50


def test_sequence_discriminator_takes_any_length(cfg):
    d = SequenceDiscriminator(cfg.audio, cfg.model)
    for t in (1, 3, 17):
        frames = torch.randn(2, t, 3, cfg.model.height, cfg.model.width)
        assert d(frames, torch.randn(2, t, 13, cfg.audio.steps)).shape == (2,)
    x = torch.randn(2, 9, 4)
    assert pyramid_pool_1d(x, (1, 2, 4)).shape == (2, 4 * 7)
    assert torch.equal(pyramid_pool_1d(x, (1,)), x.amax(1))


def test_generator_is_causal_and_steps_like_the_whole_sequence(cfg):
    torch.manual_seed(0)
    g = Generator(cfg).eval()
    still = torch.rand(1, 3, cfg.model.height, cfg.model.width) * 2 - 1
    mfcc = torch.randn(1, 8, 13, cfg.audio.steps)
    z = torch.randn(1, 8, 10)
    with torch.no_grad():
        whole = g(still, mfcc, z)
        changed = mfcc.clone()
        changed[:, 5:] += 1.0
        later_changed = g(still, changed, z)
        assert torch.allclose(whole[:, :5], later_changed[:, :5], atol=1e-6)
        assert not torch.allclose(whole[:, 5:], later_changed[:, 5:], atol=1e-4)
        identity = g.encode_identity(still)
        state, steps = GeneratorState(), []
        for t in range(8):
            frame, state = g.decode(identity, mfcc[:, t : t + 1], z[:, t : t + 1], state)
            steps.append(frame)
    assert torch.allclose(torch.cat(steps, 1), whole, atol=1e-5)


def test_noise_is_drawn_frame_by_frame(cfg):
    n = NoiseGenerator(cfg.model.noise)
    a = n.sample(1, 6, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    b = torch.cat([n.sample(1, 2, generator=g), n.sample(1, 4, generator=g)], 1)
    assert torch.equal(a, b)
    big = n.sample(4, 2000, generator=torch.Generator().manual_seed(0))
    assert big.std().item() == pytest.approx(0.77, rel=0.05)


def test_render_with_a_still_per_frame_equals_stepping_frame_by_frame(cfg):
    """codes() through time, then render() of frame i on still i: what dub does with its own still per frame."""
    torch.manual_seed(0)
    g = Generator(cfg).eval()
    stills = torch.rand(6, 3, cfg.model.height, cfg.model.width) * 2 - 1
    mfcc, z = torch.randn(1, 6, 13, cfg.audio.steps), torch.randn(1, 6, 10)
    with torch.no_grad():
        identity = g.encode_identity(stills)
        state, stepped = None, []
        for i in range(6):
            one = type(identity)(identity.code[i : i + 1], [s[i : i + 1] for s in identity.skips], identity.still[i : i + 1])
            frame, state = g.decode(one, mfcc[:, i : i + 1], z[:, i : i + 1], state)
            stepped.append(frame[0, 0])
        audio, noise, end = g.codes(mfcc, z)
        rendered = g.render(identity, audio.transpose(0, 1), noise.transpose(0, 1))[:, 0]
    torch.testing.assert_close(rendered, torch.stack(stepped), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(end.audio, state.audio, atol=1e-5, rtol=1e-5)
