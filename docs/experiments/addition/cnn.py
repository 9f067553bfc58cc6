import sys, time, torch, torch.nn.functional as F
from stnkit.data import load_digits, AdditionMNIST
from stnkit.models import create
from stnkit.train.datamodule import split_train_val
torch.manual_seed(0)
lr, bs, steps, opt_name = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
model = sys.argv[5] if len(sys.argv) > 5 else "cnn"
images, labels = load_digits("train")
tr, va = split_train_val(len(labels), 500)
train = AdditionMNIST(images[tr], labels[tr], seed=0, fresh=True)
val = AdditionMNIST(images[va], labels[va], seed=1000)
import os
kw = dict(num_transformers=2, transform="affine", loc_downsample=1) if model == "st-fcn" else {}
if os.environ.get("HIDDEN"): kw["hidden"] = int(os.environ["HIDDEN"])
net = create(model, in_channels=2, in_size=42, num_classes=19, **kw)
opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4) if opt_name == "adamw" else torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
t0 = time.time(); step = 0; ep = 0; tl = []
while step < steps:
    train.set_epoch(ep); x, y = train.images, train.labels; perm = torch.randperm(len(y)); ep += 1
    for i in range(0, len(y) - bs + 1, bs):
        idx = perm[i:i+bs]; net.train()
        loss = F.cross_entropy(net(x[idx]), y[idx]); opt.zero_grad(); loss.backward(); opt.step(); tl.append(loss.item()); step += 1
        if step % int(os.environ.get("EVERY", 50)) == 0:
            net.eval()
            with torch.no_grad(): out = net(val.images); err = (out.argmax(1) != val.labels).float().mean().item()*100; vl = F.cross_entropy(out, val.labels).item()
            print(f"{model} {opt_name} lr{lr} bs{bs} step {step} train_loss(last50) {sum(tl[-50:])/50:.3f} val_loss {vl:.3f} val_err {err:.1f} t {time.time()-t0:.0f}s", flush=True)
        if step >= steps: break
