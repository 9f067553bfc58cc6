import sys, json, time, shutil, torch, torch.nn.functional as F
from pathlib import Path
from stnkit.data import load_digits, CoLocalization
from stnkit.data.dataset import as_digits, stream_seed
from stnkit.models import CNN
from stnkit.geometry import warp
from stnkit_experiments.colocalization import *
from stnkit.train.checkpoint import save_tensors, load_tensors
torch.set_num_threads(1)
tr, te = load_digits("train"), load_digits("test")
path = Path("runs/coloc-trials/enc_aug.safetensors")
if not path.is_file():
    d = as_digits(tr[0]); lab = torch.as_tensor(tr[1])
    torch.manual_seed(0); cnn = CNN(1, 28); opt = torch.optim.Adam(cnn.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    for ep in range(2):
        order = torch.randperm(len(d), generator=g)
        for i in range(0, len(order), 64):
            idx = order[i:i+64]; b = len(idx)
            s = 0.8 + 0.4*torch.rand(b, generator=g); t = (torch.rand(b,2,generator=g)*2-1)*0.25
            x = warp(d[idx], torch.cat([s[:,None], t],1), "attention", out_size=28)
            loss = F.cross_entropy(cnn(x), lab[idx]); opt.zero_grad(); loss.backward(); opt.step()
    save_tensors(path, cnn.state_dict(), {"aug": "s 0.8-1.2, t +-0.25"})
cnn = CNN(1, 28); cnn.load_state_dict(load_tensors(path)[0]); cnn.eval()
print("enc err", encoder_error(cnn, *te))
for mode in ["concat", "logits_l2"]:
    e = DigitEncoder(cnn, mode).eval()
    ds = CoLocalization(*tr, 3, "plain", n=100)
    truth = attention_from_box(ds.boxes.double(), 84); n=100
    pts = dict(truth=truth, ident=torch.tensor([[1.,0,0]]).repeat(n,1).double(), blank=torch.tensor([[0.2,0.8,-0.8]]).repeat(n,1).double())
    print(mode, {k: loss_at(e, ds, p, 1.0, 0) for k,p in pts.items()}, flush=True)
kw = json.loads(sys.argv[1]); cfg = ColocConfig(**kw)
rd = Path("runs/coloc-trials/runs")/sys.argv[2]; shutil.rmtree(rd, ignore_errors=True)
r = train_colocalization(cfg, rd, cnn, tr, te)
print(sys.argv[2], kw, r["train"], r["held_out"], r["losses"][::6], flush=True)
