"""Recompute the ``loss_at`` diagnostic of finished co-localisation runs, from their saved models.

``loss_at`` once drew its random patches from slot 0 of the seed's generator block, the slot that digit 0's
training canvases use, so for digit 0 its "random" patches were the digits' own boxes. The fixed code
(``LOSS_AT_SLOT``) gives what a fresh ``stnkit reproduce colocalization`` would write; this script writes the
same into the runs of an existing ``--out`` without training again (each run's ``model.safetensors`` and each
seed's encoder must be there; the models are not committed but for seed 0).

Usage (from the repository root): PYTHONPATH=src python docs/experiments/colocalization/recompute_loss_at.py \
    RUNS_WITH_MODELS OUT   (RUNS_WITH_MODELS/runs/colocalization/... holds the models, OUT the results.json files)
then ``stnkit reproduce colocalization --out OUT --seeds 3 --report-only`` rewrites the markdown.
"""

import json
import sys
from pathlib import Path

import torch

from stnkit._io import atomic_write_text
from stnkit.data import load_digits
from stnkit.data.colocalization import COLOC_CANVAS
from stnkit.geometry import attention_from_box
from stnkit_experiments import colocalization as co

torch.set_num_threads(1)
models, out = Path(sys.argv[1]), Path(sys.argv[2])
train_digits, test_digits = load_digits("train"), load_digits("test")
encoders = {}
for done in sorted((out / "runs" / "colocalization").glob("*/digit*/seed*/results.json")):
    result = json.loads(done.read_text())
    config = co.ColocConfig.from_dict(result["config"])
    rel = done.parent.relative_to(out)
    key = (config.seed, config.encoder_augment)
    if key not in encoders:
        path = co.encoder_path(models, config.seed, config.encoder_augment)
        encoders[key] = co.load_or_train_encoder(
            path, *train_digits, seed=config.seed, epochs=config.encoder_epochs, augment=config.encoder_augment
        )
    enc = co.DigitEncoder(encoders[key], config.descriptor).eval()
    st = co.load_transformer(models / rel / "model.safetensors")
    ds = co.problem_canvases(config, train_digits, test_digits)[0]
    with torch.no_grad():
        trained = torch.cat([st.predict_params(ds.images[i : i + 256]) for i in range(0, len(ds), 256)])
    truth = attention_from_box(ds.boxes.double(), COLOC_CANVAS)
    old = result.get("loss_at")
    result["loss_at"] = {
        "truth": co.loss_at(enc, ds, truth, config.margin, config.seed),
        "identity": co.loss_at(enc, ds, st.family.identity(len(ds)), config.margin, config.seed),
        "trained": co.loss_at(enc, ds, trained, config.margin, config.seed),
    }
    atomic_write_text(done, json.dumps(result, indent=2) + "\n")
    print(f"{rel}: {old} -> {result['loss_at']}")
