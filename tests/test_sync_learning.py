"""The GAN learns lip sync: trained briefly on synthetic faces whose mouths follow their audio, the
generated mouth opening follows held-out speech, and stops following it when the audio is swapped."""
import time

import numpy as np
import torch

from talkface.config import override, tiny
from talkface.data.synthetic import SyntheticDataset, measure_opening
from talkface.pixels import to_tensor, to_uint8
from talkface.train import Trainer

STEPS = 500
TIME_LIMIT = 600  # seconds; a safety cap (500 steps take about 3-4 minutes on 2 CPU cores)


def opening_correlations(model, val: SyntheticDataset) -> tuple[float, float]:
    """Mean Pearson r of the generated mouth opening with the true one: own audio, swapped audio."""
    own, swapped = [], []
    with torch.inference_mode():
        for i, clip in enumerate(val.clips):
            still = to_tensor(clip.frames[0])[None]
            z = model.noise.sample(1, len(clip.frames), generator=torch.Generator().manual_seed(i))
            for mfcc, out in ((val.mfcc[i], own), (val.mfcc[(i + 1) % len(val)], swapped)):
                frames = to_uint8(model(still, torch.from_numpy(mfcc)[None], z)[0])
                out.append(np.corrcoef(measure_opening(frames), clip.opening)[0, 1])
    return float(np.nanmean(own)), float(np.nanmean(swapped))


def test_gan_learns_to_follow_the_audio(tmp_path):
    cfg = override(tiny(), [f"train.steps={STEPS}", "train.log_every=50", f"train.checkpoint_every={STEPS}"])
    size = (cfg.model.height, cfg.model.width)
    train = SyntheticDataset(200, 48, size, cfg.audio, seed=0)
    val = SyntheticDataset(12, 75, size, cfg.audio, seed=12345)  # identities and speech never seen
    trainer = Trainer(cfg, train, tmp_path)
    start = time.time()
    trainer.fit(progress=False, time_limit=TIME_LIMIT)
    own, swapped = opening_correlations(trainer.ema, val)
    print(f"\nsync learning: {trainer.step} steps in {time.time() - start:.0f} s, r(own audio)={own:.3f}, r(swapped)={swapped:.3f}")
    assert own >= 0.8, f"mouth opening does not follow the audio: r={own:.3f} after {trainer.step} steps"
    assert swapped <= 0.3, f"mouth opening follows audio it was not given: r={swapped:.3f}"
