import sys, time, importlib.util, torch
torch.set_num_threads(1)
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3] / "src"))
import stnkit.registration.core as core
from stnkit.train.config import TrainConfig
from stnkit.train.evaluate import load_test_set
from stnkit.registration import register
spec = importlib.util.spec_from_file_location("old_sim", str(__import__("pathlib").Path(__file__).with_name("ncc_before_d3825ad.py"))); old = importlib.util.module_from_spec(spec)
old.__package__ = "stnkit.nn"; spec.loader.exec_module(old)
new_ncc = core.ncc_loss
S = {"dense": dict(loss="ncc", levels=3, steps=10, smooth=1.0, field_steps=50), "velocity": dict(loss="ncc", levels=2, steps=50, smooth=1.0, field_steps=50)}
for ds, size in (("shapes2d", 64), ("shapes3d", 32)):
    p = load_test_set(TrainConfig(dataset=ds, volume_size=size), split="val", size=1).pair(0)
    for tr, kw in S.items():
        out = {}
        for name, f in (("old", old.ncc_loss), ("new", new_ncc)):
            core.ncc_loss = f
            register(p["fixed"], p["moving"], tr, **kw) if ds == "shapes2d" else None
            c = time.process_time(); r = register(p["fixed"], p["moving"], tr, **kw); c = time.process_time() - c
            out[name] = (c, r.levels[-1]["last_loss"], r.grid)
        d = (out["old"][2] - out["new"][2]).abs().max().item()
        print(f"{ds} {tr}: CPU s old {out['old'][0]:.3f} new {out['new'][0]:.3f} ({out['old'][0]/out['new'][0]:.1f}x); final loss {out['old'][1]:.6f} vs {out['new'][1]:.6f}; max |grid diff| {d:.2e}", flush=True)
