"""Training: one loop (`loop.Trainer`) and one task per thing trained (`gan`: the seed's GAN and the
motion model; `sync`: the lip-sync expert; `refiner`: the mouth refiner)."""
