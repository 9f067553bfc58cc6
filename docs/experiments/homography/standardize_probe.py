import sys, time, math, torch, numpy as np
from torch import nn
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3] / "src"))
from stnkit.data.homography import HomographyPatches
from stnkit.models.homography import HomographyNet
torch.set_num_threads(1)
variant = sys.argv[1]; steps = int(sys.argv[2]); lr = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-3
torch.manual_seed(0)
train = HomographyPatches("train", 32 * 64, seed=0, fresh=True)
val = HomographyPatches("val", 128, seed=1000)
vx = torch.stack([val[i][0] for i in range(128)]); vy = torch.stack([val[i][1] for i in range(128)])
def prep(x):
    if "norm" in variant:
        m = x.mean(dim=(2, 3), keepdim=True); s = x.std(dim=(2, 3), keepdim=True) + 1e-3
        return (x - m) / s
    if "center" in variant:
        return x * 2 - 1
    return x
import torch.nn.functional as F
class CorrNet(nn.Module):
    def __init__(self, r=4):
        super().__init__()
        def stage(i, o): return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.GroupNorm(8, o), nn.ReLU(), nn.MaxPool2d(2)]
        self.feat = nn.Sequential(*stage(1, 16), *stage(16, 32), *stage(32, 64), nn.Conv2d(64, 64, 3, padding=1))
        self.r = r; c = (2 * r + 1) ** 2
        self.head = nn.Sequential(*stage(c, 64), *stage(64, 128), nn.Flatten(), nn.Linear(128 * 16, 256), nn.ReLU())
        self.out = nn.Linear(256, 8); nn.init.zeros_(self.out.weight); nn.init.zeros_(self.out.bias)
    def forward(self, x):
        b = x.shape[0]
        f = self.feat(torch.cat([x[:, :1], x[:, 1:]], 0))
        f = F.normalize(f, dim=1); fa, fb = f[:b], f[b:]
        r = self.r; pb = F.pad(fb, (r, r, r, r)); h, w = fa.shape[-2:]
        vol = torch.stack([(fa * pb[:, :, i:i + h, j:j + w]).sum(1) for i in range(2 * r + 1) for j in range(2 * r + 1)], 1)
        return self.out(self.head(F.relu(vol))) * 32.0
net = CorrNet() if "corr" in variant else HomographyNet()
if "bn" in variant:
    for i, m in enumerate(net.features):
        if isinstance(m, nn.GroupNorm):
            net.features[i] = nn.BatchNorm2d(m.num_channels)
if "rinit" in variant:
    nn.init.normal_(net.out.weight, std=1e-3)
opt = torch.optim.Adam(net.parameters(), lr=lr)
loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True, num_workers=0)
step, ep, t0, run = 0, 0, time.time(), []
while step < steps:
    train.set_epoch(ep); ep += 1
    for x, y in loader:
        net.train()
        p = net(prep(x)); loss = 0.5 * ((p - y) ** 2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        err = (p - y).view(-1, 4, 2).norm(dim=-1).mean().item(); run.append(err); step += 1
        if step % 50 == 0:
            net.eval()
            with torch.no_grad():
                vp = net(prep(vx)); verr = (vp - vy).view(-1, 4, 2).norm(dim=-1).mean().item()
            print(f"{variant} step {step} train {np.mean(run[-50:]):.2f} val {verr:.2f} pred_std {vp.std().item():.2f} t {time.time()-t0:.0f}s", flush=True)
        if step >= steps: break
