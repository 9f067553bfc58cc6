import sys, torch, torch.nn.functional as F
from pathlib import Path
from stnkit.data import load_digits, CoLocalization
from stnkit_experiments.colocalization import *
from stnkit.geometry import warp, attention_from_box
torch.set_num_threads(1)
tr = load_digits("train")
enc = load_or_train_encoder(Path("runs/coloc-trials/enc.safetensors"), *tr, seed=0, epochs=2)
class E(torch.nn.Module):
    def __init__(s, cnn, mode): super().__init__(); s.cnn=cnn; s.mode=mode; s.c=DigitEncoder(cnn,"concat")
    def forward(s, x):
        if s.mode=="concat": return s.c(x)
        if s.mode=="concat_l2": return F.normalize(s.c(x), dim=1)
        if s.mode=="softmax": return torch.softmax(s.cnn(x),1)
        if s.mode=="logits_l2": return F.normalize(s.cnn(x),dim=1)
        if s.mode=="h2_l2":
            f=s.cnn.features; return F.normalize(f[:6](x).flatten(1),dim=1)
def L(e, ds, params, same=False):
    with torch.no_grad():
        crops = warp(ds.images, params.float(), "attention", out_size=28)
        g=torch.Generator().manual_seed(1)
        rand = random_patches(ds.images, g, scale=params[:,0].float() if same else None)
        fc, fr = e(crops), e(rand)
        dp = torch.cdist(fc.double(), fc.double()).pow(2); dn=(fc-fr).double().pow(2).sum(1)
        h = F.relu(dp - dn[:,None] + 1.0); off=~torch.eye(len(ds),dtype=torch.bool)
        return float(h[off].mean())
for kind in ["plain","cluttered"]:
  for digit in [3,8]:
    ds = CoLocalization(*tr, digit, kind, n=100)
    n=len(ds)
    truth = attention_from_box(ds.boxes.double(), 84)
    ident = torch.tensor([[1.,0,0]]).repeat(n,1).double()
    blank = torch.tensor([[0.2,0.8,-0.8]]).repeat(n,1).double()
    half = torch.tensor([[0.5,0.,0.]]).repeat(n,1).double()
    shift = truth.clone(); shift[:,1]+=10/42
    big = truth.clone(); big[:,0]*=1.5
    for mode in ["concat","concat_l2","softmax","logits_l2","h2_l2"]:
        e=E(enc,mode).eval()
        for same in [False, True]:
            r={k:round(L(e,ds,p,same),3) for k,p in dict(truth=truth,ident=ident,blank=blank,half=half,shift10=shift,big15=big).items()}
            print(kind,digit,mode,"same" if same else "fixed",r, flush=True)
