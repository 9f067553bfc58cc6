import sys, torch
from stnkit.data import load_digits, CoLocalization
from stnkit_experiments.colocalization import *
from stnkit.geometry import attention_from_box, box_iou
torch.set_num_threads(1)
tr = load_digits("train")
ds = CoLocalization(*tr, 3, "plain", n=100)
torch.manual_seed(0)
st = coloc_transformer(True)
truth = attention_from_box(ds.boxes.double(), 84).float()
lr=float(sys.argv[1]); steps=int(sys.argv[2])
opt = torch.optim.Adam(st.parameters(), lr=lr)
g=torch.Generator().manual_seed(0)
for i in range(steps):
    idx = torch.randint(0,100,(10,),generator=g)
    p = st.predict_params(ds.images[idx])
    loss = (p-truth[idx]).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    if i%(steps//5)==0: print(i, float(loss))
st.eval()
iou = box_iou(predicted_boxes(st, ds.images), ds.boxes)
print("supervised", lr, steps, "IoU>0.5 %", float((iou>0.5).float().mean())*100, "mean IoU", float(iou.mean()))
