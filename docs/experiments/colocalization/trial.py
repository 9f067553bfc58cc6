import sys, json, time, torch; exec(open(__import__("pathlib").Path(__file__).with_name("zin.py")).read()) if "ZIN" in __import__("os").environ else None
from pathlib import Path
from stnkit.data import load_digits, CoLocalization
from stnkit_experiments.colocalization import *
torch.set_num_threads(1)
kw = json.loads(sys.argv[1]); name = sys.argv[2]
tr, te = load_digits("train"), load_digits("test")
enc = load_or_train_encoder(Path("runs/coloc-trials/enc.safetensors"), *tr, seed=0, epochs=2)
cfg = ColocConfig(**kw)
rd = Path("runs/coloc-trials/runs")/name
import shutil; shutil.rmtree(rd, ignore_errors=True)
t=time.time()
r = train_colocalization(cfg, rd, enc, tr, te)
st = load_transformer(rd/"model.safetensors")
ds = CoLocalization(*tr, cfg.digit, cfg.kind, n=cfg.n, seed=cfg.seed)
with torch.no_grad(): p = st.predict_params(ds.images)
print(name, kw, "train", r["train"], "held", r["held_out"], "losses", r["losses"][::max(1,len(r["losses"])//6)], r["losses"][-1],
      "mean s %.3f"%float(p[:,0].mean()), "wall %.0f"%(time.time()-t), flush=True)
