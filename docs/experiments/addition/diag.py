import sys, time, torch, torch.nn as nn, torch.nn.functional as F
from stnkit.data import load_digits, AdditionMNIST
from stnkit.train.datamodule import split_train_val
torch.manual_seed(0)
mode, hidden, lr, epochs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
images, labels = load_digits("train")
tr, va = split_train_val(len(labels), 500)
train = AdditionMNIST(images[tr], labels[tr], seed=0, fresh=True)
val = AdditionMNIST(images[va], labels[va], seed=1000)
def get(ds):
    x = ds.canonicalize() if mode == "canon" else ds.images
    return x, ds.labels
xv, yv = get(val)
d = xv[0].numel()
net = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 19))
opt = torch.optim.AdamW(net.parameters(), lr=lr)
t0 = time.time()
for ep in range(epochs):
    train.set_epoch(ep)
    x, y = get(train)
    perm = torch.randperm(len(y))
    tl = 0
    for i in range(0, len(y), 64):
        idx = perm[i:i+64]
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(); loss.backward(); opt.step(); tl += loss.item() * len(idx)
    with torch.no_grad():
        err = (net(xv).argmax(1) != yv).float().mean().item() * 100
    print(f"{mode} h{hidden} lr{lr} ep{ep} train_loss {tl/len(y):.3f} val_err {err:.1f} t {time.time()-t0:.0f}s", flush=True)
