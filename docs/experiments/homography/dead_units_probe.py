"""Dead units: the fraction of HomographyNet's 256 hidden units positive for at least one of 64 training
pairs after 200 Adam steps (lr 1e-3, batch 8), with plain ReLUs (leak 0) and leaky ones (leak 0.1).
Run: PYTHONPATH=src python docs/experiments/homography/dead_units_probe.py > docs/experiments/homography/dead_units_probe.txt"""
import torch
from stnkit.data.homography import HomographyPatches
from stnkit.models.homography import HomographyNet
torch.set_num_threads(1)
ds = HomographyPatches("train", 64, seed=0)
x, y = (torch.stack(t) for t in zip(*(ds[i] for i in range(64))))
for leak, std in ((0.0, False), (0.0, True), (0.1, True)):
    torch.manual_seed(0)
    net = HomographyNet(leak=leak, standardize=std)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(200):
        b = slice((step*8)%64, (step*8)%64+8)
        out = net(x[b]); loss = 0.5*((out-y[b])**2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    net.eval()
    with torch.no_grad():
        h = net.head[:2](net.features(x if not std else (x - x.mean((-2,-1),keepdim=True))/(x.std((-2,-1),keepdim=True)+1e-3)))
        out = net(x)
    alive = (h > 0).any(0).float().mean().item()
    print(f"leak {leak} std {std}: hidden units positive for some input {alive:.2f}, output std over inputs {out.std(0).mean():.4f}")
