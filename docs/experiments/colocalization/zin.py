import torch
from stnkit.geometry.families import Attention
def bound(self, raw):
    s, tx, ty = raw.unbind(1)
    s = 1.0 - 0.9 * torch.sigmoid(s - 3.0)
    lim = 1.0 - s
    return torch.stack([s, lim * torch.tanh(tx), lim * torch.tanh(ty)], 1)
Attention.bound = bound
import stnkit_experiments.colocalization as co, math
_orig = co.coloc_transformer
def ct(bounded=False, init_scale=1.0):
    st = _orig(bounded)
    if init_scale != 1.0:
        with torch.no_grad(): st.head.bias[0] = 3.0 + math.log((1-init_scale)/0.9/(1-(1-init_scale)/0.9))
    return st
co.coloc_transformer = ct
