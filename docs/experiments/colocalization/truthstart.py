import sys, json, shutil, torch; exec(open(__import__("pathlib").Path(__file__).with_name("zin.py")).read())
from pathlib import Path
from stnkit.data import load_digits, CoLocalization
from stnkit_experiments.colocalization import *
from stnkit_experiments.colocalization import _save_state
from stnkit.geometry import attention_from_box, box_iou
torch.set_num_threads(1)
tr, te = load_digits("train"), load_digits("test")
kw=json.loads(sys.argv[1]); cfg=ColocConfig(**kw)
ds = CoLocalization(*tr, cfg.digit, cfg.kind, n=100)
torch.manual_seed(0)
st = coloc_transformer(True)
truth = attention_from_box(ds.boxes.double(), 84).float()
opt = torch.optim.Adam(st.parameters(), lr=3e-3)
g=torch.Generator().manual_seed(0)
for i in range(400):
    idx = torch.randint(0,100,(10,),generator=g)
    loss = (st.predict_params(ds.images[idx])-truth[idx]).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
st.eval(); iou = box_iou(predicted_boxes(st, ds.images), ds.boxes); print("start", float((iou>0.5).float().mean()))
rd=Path("runs/coloc-trials/runs")/sys.argv[2]; shutil.rmtree(rd, ignore_errors=True); rd.mkdir(parents=True)
st2 = coloc_transformer(cfg.bounded); st2.load_state_dict(st.state_dict())
_save_state(rd/"last.safetensors", st2, make_optimizer(st2, cfg), 0, cfg, [])
enc = load_or_train_encoder(Path("runs/coloc-trials/enc.safetensors"), *tr, seed=0, epochs=2)
r = train_colocalization(cfg, rd, enc, tr, te)
print(sys.argv[2], kw, r["train"], r["held_out"], r["losses"][::6], flush=True)
