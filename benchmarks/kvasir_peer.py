"""The peer for the Kvasir-SEG protocol: a plain MONAI U-Net training script, same split, same clock.

Issue 2 quotes "a plain MONAI U-Net script reached 0.80 at 256x256 in 12 minutes here". This is
such a script, written the way MONAI's 2D tutorials do it, so medseg's 2D recipe can be compared
against it on the same machine, split and scoring (`accuracy_2d.py`'s Dice at each image's
original resolution):

* every image resized to 256x256 (aspect ratio not kept), intensities scaled to [0, 1];
* `monai.networks.nets.UNet` (16-256 channels, strides 2, two residual units, batch norm);
* `DiceCELoss` (softmax, one-hot), Adam lr 1e-3, batch 16, random flips and 90-degree rotations;
* a wall-clock budget; no validation split (the script trains on all 800 training images);
* prediction at 256x256, probabilities resized back to the original size, argmax.

Writes RESULT_DIR/kvasir_peer.json and prints it.

    python benchmarks/kvasir_peer.py [--minutes 12] [--size 256]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

DATA = Path(os.environ.get("MEDSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def split() -> tuple[list[str], list[str]]:
    """Sorted stems; every 5th (index % 5 == 0) held out, as in accuracy_2d.py."""
    stems = sorted(p.stem for p in (DATA / "kvasir-seg" / "images").iterdir())
    return [s for i, s in enumerate(stems) if i % 5], [s for i, s in enumerate(stems) if i % 5 == 0]


def load(stem: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, size, size) image in [0, 1] and (size, size) binary mask."""
    image = Image.open(DATA / "kvasir-seg" / "images" / f"{stem}.jpg").convert("RGB")
    mask = Image.open(DATA / "kvasir-seg" / "masks" / f"{stem}.jpg").convert("L")
    image = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    mask = np.asarray(mask.resize((size, size), Image.NEAREST)) >= 128
    return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(mask).long()


def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips and 90-degree rotations per batch (what MONAI's RandFlip/RandRotate90 do)."""
    if torch.rand(1, generator=gen) < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    if torch.rand(1, generator=gen) < 0.5:
        x, y = x.flip(-2), y.flip(-2)
    k = int(torch.randint(4, (1,), generator=gen))
    return x.rot90(k, (-2, -1)), y.rot90(k, (-2, -1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()

    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    start = time.perf_counter()
    train_stems, test_stems = split()
    pairs = [load(s, args.size) for s in train_stems]
    images = torch.stack([p[0] for p in pairs])
    labels = torch.stack([p[1] for p in pairs])
    load_s = time.perf_counter() - start

    net = UNet(spatial_dims=2, in_channels=3, out_channels=2, channels=(16, 32, 64, 128, 256),
               strides=(2, 2, 2, 2), num_res_units=2, norm="batch")
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    deadline = start + args.minutes * 60
    steps = 0
    net.train()
    while time.perf_counter() < deadline:
        order = torch.randperm(len(images), generator=gen)
        for i in range(0, len(order) - args.batch + 1, args.batch):
            if time.perf_counter() >= deadline:
                break
            idx = order[i:i + args.batch]
            x, y = augment(images[idx], labels[idx], gen)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x), y[:, None])
            loss.backward()
            opt.step()
            steps += 1
            if steps % 20 == 0:
                print(f"step {steps} loss {loss.item():.3f} {time.perf_counter() - start:.0f}s", flush=True)
    train_s = time.perf_counter() - start

    net.eval()
    dices = []
    with torch.no_grad():
        for stem in test_stems:
            x, _ = load(stem, args.size)
            ref = np.asarray(Image.open(DATA / "kvasir-seg" / "masks" / f"{stem}.jpg").convert("L")) >= 128
            prob = torch.softmax(net(x[None]), 1)
            prob = F.interpolate(prob, size=ref.shape, mode="bilinear", align_corners=False)
            pred = prob.argmax(1)[0].numpy() == 1
            denominator = pred.sum() + ref.sum()
            dices.append(1.0 if denominator == 0 else 2 * (pred & ref).sum() / denominator)
    result = {"peer": "plain MONAI UNet script", "minutes": args.minutes, "size": args.size,
              "batch": args.batch, "steps": steps, "images_per_s": round(steps * args.batch / (train_s - load_s), 2),
              "load_s": round(load_s, 1), "train_wall_s": round(train_s, 1),
              "dice": {"polyp": round(float(np.mean(dices)), 4)}, "test_cases": len(test_stems),
              "parameters": sum(p.numel() for p in net.parameters())}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kvasir_peer.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
