"""How well the photometric loss points to the truth at the identity: the cosine between minus its gradient with
respect to the 8 offsets and the true offsets, over 64 training pairs (mean, and the fraction of pairs where it is
positive), for the loss at full resolution, over pyramids, on coarse levels only, and on standardised patches.
Run: PYTHONPATH=src python docs/experiments/homography/gradient_probe.py > docs/experiments/homography/gradient_probe.txt"""
import torch, torch.nn.functional as F
torch.set_num_threads(1)
from stnkit.data.homography import HomographyPatches, offsets_to_params
from stnkit.geometry import warp
from stnkit.train.losses import photometric_loss
ds = HomographyPatches("train", 64, seed=0)
x, y = (torch.stack(t) for t in zip(*(ds[i] for i in range(64))))
def std(x):
    return (x - x.mean((-2,-1),keepdim=True)) / (x.std((-2,-1),keepdim=True)+1e-3)
def coarse(off, x, y, lo):
    pa, pb = x[:, :1], x[:, 1:2]
    params = offsets_to_params(off); w = warp(pa, params, "projective")
    with torch.no_grad(): inside = (warp(torch.ones_like(pa), params, "projective") > 0.999).float()
    tot=0
    for l in range(lo):
        w, pb = F.avg_pool2d(w,2), F.avg_pool2d(pb,2); inside = (F.avg_pool2d(inside,2)>0.999).float()
    return ((w-pb).abs()*inside).sum()/inside.sum().clamp_min(1)
def cos(fn, xx, scale=1.0):
    res=[]
    for t in (0.0,):
        off = (t*y).clone().requires_grad_(True)
        fn(off, xx).backward()
        g = -off.grad
        res.append(F.cosine_similarity(g, y - t*y, dim=1))
    c = res[0]
    return f"mean cos {c.mean():.3f}, frac>0 {(c>0).float().mean():.2f}"
print("L1 full      ", cos(lambda o,xx: photometric_loss(o,xx,y)[0], x))
for L in (2,3,4,5):
    print(f"pyramid {L}   ", cos(lambda o,xx: photometric_loss(o,xx,y,levels=L)[0], x))
for lo in (2,3,4):
    print(f"coarse only {lo}", cos(lambda o,xx: coarse(o,xx,y,lo), x))
print("std L1 full  ", cos(lambda o,xx: photometric_loss(o,std(xx),y)[0], x))
print("std pyr 4    ", cos(lambda o,xx: photometric_loss(o,std(xx),y,levels=4)[0], x))
